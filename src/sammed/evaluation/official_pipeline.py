"""The official SAM-Med3D inference protocol (``utils/infer_utils.py``), reproduced exactly.

This is the pipeline behind ``medim_val_single.py`` / ``medim_val_dataset.py`` (spec §8), kept
separate from sammed's own inference so that published numbers can be re-run bit for bit. For each
foreground class of the GT, in sorted order:

1. binarise the label (``label == class``), TorchIO ``Resample`` to 1.5 mm (image linear, label
   nearest, dtype kept: an int16 CT is truncated toward zero), ``ToCanonical`` (RAS);
2. ``CropOrPad`` a 128^3 ROI centred on the bounding box of the class (pad with 0 on raw values);
3. ``ZNormalization`` with mean/std over ROI voxels > 0, applied to every voxel;
4. simulated clicks (``random_sample_next_click``, spec §9.1) and the SAM-Med3D model;
5. nearest ``Resample`` of the 128^3 prediction straight back onto the original image grid;
6. merge into one canvas (later classes overwrite earlier ones), written with the GT geometry.

Every geometric step calls TorchIO itself, pinned to 0.20.9: 0.20.11 changed the ``Resample``
output grid (``ceil`` -> ``floor`` and re-centred), which moves every ROI by a voxel or so.
TorchIO is imported lazily so that importing this module never needs it.

Axis conventions: TorchIO tensors are ``(C, A0, A1, A2)``; after ``ToCanonical`` A0/A1/A2 are the
RAS axes x/y/z (indices increase towards R, A, S). Click coordinates are ``(A0, A1, A2)`` indices
in the ROI. Arrays said to be ``zyx`` are in SimpleITK ``GetArrayFromImage`` order.

Randomness: upstream calls ``np.random.seed(seed)`` and ``torch.manual_seed(seed)`` per case and
draws clicks from NumPy's global RNG. Here the clicks come from a private
``np.random.RandomState(seed)`` (the identical stream) and the torch seed is set inside
``torch.random.fork_rng``, so the caller's global RNG state is left alone.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sammed.errors import InvalidImageError, SammedError
from sammed.evaluation.official_clicks import RNG, random_sample_next_click
from sammed.geometry import zyx_from_ijk
from sammed.io.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk
    import torchio as tio

__all__ = [
    "PINNED_TORCHIO",
    "TorchioVersionError",
    "Click",
    "OfficialCase",
    "load_official_subject",
    "resample_to_canonical",
    "preprocess_subject",
    "preprocess_official",
    "postprocess_official",
    "sam_model_infer_official",
    "run_official_protocol",
    "validate_paired_img_gt",
]

PINNED_TORCHIO = "0.20.9"
DEFAULT_SPACING = (1.5, 1.5, 1.5)
DEFAULT_CROP = 128
DEFAULT_SEED = 233
# The decoder's low-res logits are 1/4 of the ROI side (128 -> 32).
LOWRES_FACTOR = 4

SixBounds = tuple[int, int, int, int, int, int]


class TorchioVersionError(SammedError, RuntimeError):
    """TorchIO is missing or not the version the official protocol is pinned to."""


def _torchio() -> Any:
    """Import TorchIO, refusing any version other than the pinned one."""
    try:
        import torchio as tio
    except ImportError as err:
        raise TorchioVersionError(
            f"the official SAM-Med3D protocol needs torchio=={PINNED_TORCHIO}; "
            "install it with `pip install sammed[official]`"
        ) from err
    if tio.__version__ != PINNED_TORCHIO:
        raise TorchioVersionError(
            f"the official SAM-Med3D protocol is pinned to torchio=={PINNED_TORCHIO} "
            f"(found {tio.__version__}): 0.20.11 changed the Resample grid from ceil to floor and "
            "CropOrPad's private API changed after 1.0, so ROIs and outputs would differ"
        )
    return tio


class Click(NamedTuple):
    """One simulated click: ROI voxel index ``(A0, A1, A2)`` and label (1 positive, 0 negative)."""

    point: tuple[int, int, int]
    label: int


@dataclass
class OfficialCase:
    """One class of one image after the official preprocessing, plus what paste-back needs.

    Attributes:
        category: the GT value this case segments.
        roi_image: ``(1,1,S,S,S)`` float32, z-normalised ROI (S = crop size, 128).
        roi_label: ``(1,1,S,S,S)`` binary ROI label, TorchIO's dtype (int32 for a uint16 file).
        roi_raw: ``(1,S,S,S)`` ROI before ZNormalization, in the image's own dtype (int16 CT).
        original_affine_ras: 4x4 RAS affine of the input image as TorchIO reads it.
        original_shape: input image shape ``(A0, A1, A2)`` = file voxel order (i, j, k).
        canonical_affine_ras / canonical_shape: grid after Resample + ToCanonical.
        roi_affine_ras: 4x4 RAS affine of the ROI grid (the paste-back source).
        applied_padding / applied_cropping: what CropOrPad actually did, TorchIO six-bound order
            ``(A0_ini, A0_fin, A1_ini, A1_fin, A2_ini, A2_fin)``; None when nothing was done.
            Padding is applied before cropping.
        functional_padding / functional_cropping: the volume-centred parameters upstream stores
            in its ``meta_info`` (``_compute_center_crop_or_pad``); nothing downstream uses them.
        znorm_mean / znorm_std: statistics of the raw ROI voxels > 0 (unbiased std).
        warnings: messages TorchIO emitted (e.g. the label is empty after resampling).
        canonical_subject: the canonical (pre-crop) subject, only when asked for.
    """

    category: int
    roi_image: torch.Tensor
    roi_label: torch.Tensor
    roi_raw: torch.Tensor
    original_affine_ras: np.ndarray
    original_shape: tuple[int, int, int]
    canonical_affine_ras: np.ndarray
    canonical_shape: tuple[int, int, int]
    roi_affine_ras: np.ndarray
    applied_padding: Optional[SixBounds]
    applied_cropping: Optional[SixBounds]
    functional_padding: Optional[SixBounds]
    functional_cropping: Optional[SixBounds]
    znorm_mean: float
    znorm_std: float
    warnings: tuple[str, ...] = ()
    canonical_subject: Optional["tio.Subject"] = field(default=None, repr=False)


# --------------------------------------------------------------------------- preprocessing


def load_official_subject(
    image_path: str | os.PathLike, gt_path: str | os.PathLike
) -> "tio.Subject":
    """Read image and GT the way upstream does (TorchIO ``ScalarImage`` / ``LabelMap``), in RAM.

    TorchIO keeps the on-disk dtype (int16 CT stays int16) except uint16/uint32, which it widens
    to a signed type because torch lacks them.
    """
    tio = _torchio()
    subject = tio.Subject(
        image=tio.ScalarImage(str(image_path)),
        label=tio.LabelMap(str(gt_path)),
    )
    subject.load()
    return subject


def resample_to_canonical(
    subject: "tio.Subject",
    category: int,
    target_spacing: Sequence[float] = DEFAULT_SPACING,
) -> "tio.Subject":
    """Binarised-label copy of ``subject`` resampled to ``target_spacing`` and reoriented to RAS.

    ``subject`` is not modified (upstream deep-copies it per class too).
    """
    tio = _torchio()
    case = copy.deepcopy(subject)
    label = case.label.data
    case.label.set_data((label == category).to(label.dtype))
    # copy=False: the subject is already private, skip TorchIO's per-transform deep copies.
    case = tio.Resample(target=tuple(target_spacing), copy=False)(case)
    return tio.ToCanonical(copy=False)(case)


def _crop_or_pad_roi(
    canonical: "tio.Subject", crop_size: int
) -> tuple["tio.Subject", Optional[SixBounds], Optional[SixBounds], Any, list[str]]:
    """Mask-centred CropOrPad to ``crop_size``^3; returns the ROI subject and what was applied.

    The applied parameters are read back from the subject history (the Pad/Crop entries the
    transform adds), so they are what really happened, not a recomputation.
    """
    tio = _torchio()
    crop = tio.CropOrPad(mask_name="label", target_shape=(crop_size,) * 3)
    # Upstream stores the volume-centred parameters in its meta info (private helper).
    functional = crop._compute_center_crop_or_pad(canonical)
    n_before = len(canonical.applied_transforms)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        roi = crop(canonical)
    applied = dict(roi.applied_transforms[n_before:])
    padding = applied.get("Pad", {}).get("padding")
    cropping = applied.get("Crop", {}).get("cropping")
    messages = [str(w.message) for w in caught]
    return roi, _six(padding), _six(cropping), functional, messages


def _six(bounds: Any) -> Optional[SixBounds]:
    """Normalise TorchIO six-bound parameters to a tuple of ints (None stays None)."""
    return None if bounds is None else tuple(int(b) for b in bounds)  # type: ignore[return-value]


def _positive_voxels(x: torch.Tensor) -> torch.Tensor:
    """ZNormalization mask of the official pipeline: raw intensity strictly above 0."""
    return x > 0


def _znormalise(raw: torch.Tensor, category: int) -> tuple[torch.Tensor, float, float]:
    """TorchIO ``ZNormalization(x > 0)`` of a ``(1,S,S,S)`` raw ROI; also returns mean and std.

    Mean/std are recomputed with the same torch ops only to report them.
    """
    tio = _torchio()
    values = raw.float()[_positive_voxels(raw)]
    mean, std = float(values.mean()), float(values.std())
    try:
        normalised = tio.ZNormalization(masking_method=_positive_voxels)(raw.clone())
    except RuntimeError as err:
        raise InvalidImageError(
            f"class {category}: the ROI has no intensity spread above 0, cannot z-normalise ({err})"
        ) from err
    return normalised, mean, std


def preprocess_subject(
    subject: "tio.Subject",
    category: int,
    crop_size: int = DEFAULT_CROP,
    target_spacing: Sequence[float] = DEFAULT_SPACING,
    keep_canonical: bool = False,
) -> OfficialCase:
    """Official ``data_preprocess`` for one class of an already loaded subject (not modified)."""
    canonical = resample_to_canonical(subject, category, target_spacing)
    roi, padding, cropping, functional, messages = _crop_or_pad_roi(canonical, crop_size)
    image, mean, std = _znormalise(roi.image.data, category)
    for message in messages:
        warnings.warn(f"class {category}: {message}", RuntimeWarning, stacklevel=2)
    return OfficialCase(
        category=int(category),
        roi_image=image.unsqueeze(0),
        roi_label=roi.label.data.clone().unsqueeze(0),
        roi_raw=roi.image.data,
        original_affine_ras=subject.image.affine.copy(),
        original_shape=tuple(int(s) for s in subject.image.spatial_shape),  # type: ignore[arg-type]
        canonical_affine_ras=canonical.image.affine.copy(),
        canonical_shape=tuple(int(s) for s in canonical.spatial_shape),  # type: ignore[arg-type]
        roi_affine_ras=roi.image.affine.copy(),
        applied_padding=padding,
        applied_cropping=cropping,
        functional_padding=_six(functional[0]),
        functional_cropping=_six(functional[1]),
        znorm_mean=mean,
        znorm_std=std,
        warnings=tuple(messages),
        canonical_subject=canonical if keep_canonical else None,
    )


def preprocess_official(
    image_path: str | os.PathLike,
    gt_path: str | os.PathLike,
    category: int,
    crop_size: int = DEFAULT_CROP,
    target_spacing: Sequence[float] = DEFAULT_SPACING,
    keep_canonical: bool = False,
) -> OfficialCase:
    """Official preprocessing of one class, straight from the files (spec §8 steps 3-9)."""
    subject = load_official_subject(image_path, gt_path)
    return preprocess_subject(subject, category, crop_size, target_spacing, keep_canonical)


# --------------------------------------------------------------------------- paste-back


def postprocess_official(pred_roi: np.ndarray, case: OfficialCase) -> np.ndarray:
    """Paste a ROI prediction back onto the original image grid (upstream ``data_postprocess``).

    One nearest-neighbour TorchIO ``Resample`` from the ROI grid (1.5 mm, RAS) onto the original
    grid undoes crop/pad, reorientation and spacing at once; voxels outside the ROI become 0.

    Args:
        pred_roi: ``(S,S,S)`` prediction on the ROI grid, axes ``(A0,A1,A2)``, values 0/1.
        case: the case it was predicted for.

    Returns:
        uint8 array in SimpleITK ``(z, y, x)`` order, i.e. the original shape reversed.
    """
    tio = _torchio()
    pred = np.asarray(pred_roi)
    if pred.ndim != 3:
        raise ValueError(f"pred_roi must be 3-D (A0,A1,A2), got shape {pred.shape}")
    source = tio.LabelMap(
        tensor=torch.from_numpy(pred.astype(np.float32)).unsqueeze(0),
        affine=case.roi_affine_ras,
    )
    reference = tio.ScalarImage(
        tensor=torch.zeros((1, *case.original_shape)),
        affine=case.original_affine_ras,
    )
    pasted = tio.Resample(target=reference, image_interpolation="nearest", copy=False)(source)
    return zyx_from_ijk(pasted.data[0].numpy().astype(np.uint8))


# --------------------------------------------------------------------------- model


def _model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's weights (CPU for a parameter-less model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _upsample(lowres: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear upsampling of decoder logits to the ROI size (align_corners=False)."""
    return F.interpolate(lowres, size=tuple(size), mode="trilinear", align_corners=False)


def _to_mask(lowres: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Binary mask as upstream computes it: ``sigmoid(upsampled) > 0.5``.

    Not ``logits > 0``: for |logit| below ~3e-8 the float32 sigmoid rounds to exactly 0.5.
    """
    return torch.sigmoid(_upsample(lowres, size)) > 0.5


def sam_model_infer_official(
    model: torch.nn.Module,
    roi_image: torch.Tensor,
    roi_gt: Optional[torch.Tensor],
    num_clicks: int = 1,
    prev_low_res_mask: Optional[torch.Tensor] = None,
    rng: RNG = None,
) -> tuple[np.ndarray, list[Click]]:
    """Upstream ``sam_model_infer``: simulated clicks + SAM-Med3D on one ROI.

    The image is encoded once. Each round draws one click from the error between the current
    prediction and ``roi_gt`` (§9.1, ``'random'``), appends it to all previous clicks, and runs the
    prompt encoder (with the previous low-res *logits* as mask prompt, zeros at first) and the
    single-mask decoder. The model is switched to eval mode and run where its weights are.

    Args:
        model: exposes ``image_encoder``, ``prompt_encoder`` (with ``get_dense_pe``) and
            ``mask_decoder`` with the SAM-Med3D call signatures.
        roi_image: ``(1,1,S,S,S)`` float32 z-normalised ROI.
        roi_gt: ``(1,1,S,S,S)`` binary GT of the ROI. An all-zero GT gives an all-zero prediction
            without drawing any click. ``None``: one positive click at the ROI centre.
        num_clicks: interaction rounds (>= 1).
        prev_low_res_mask: ``(1,1,S/4,S/4,S/4)`` initial mask prompt; zeros if None.
        rng: click RNG (see :mod:`sammed.evaluation.official_clicks`); None = NumPy's global RNG.

    Returns:
        ``(S,S,S)`` uint8 prediction in ROI ``(A0,A1,A2)`` order, and the clicks fed, in order.
    """
    if num_clicks < 1:
        raise ValueError(f"num_clicks must be >= 1, got {num_clicks}")
    if roi_image.ndim != 5 or roi_image.shape[:2] != (1, 1):
        raise ValueError(f"roi_image must be (1,1,A0,A1,A2), got {tuple(roi_image.shape)}")
    size = tuple(roi_image.shape[-3:])
    if roi_gt is not None and not bool((roi_gt != 0).any()):
        return np.zeros(size, dtype=np.uint8), []

    model.eval()
    device = _model_device(model)
    lowres_shape = (1, 1, *(s // LOWRES_FACTOR for s in size))
    with torch.no_grad():
        embeddings = model.image_encoder(roi_image.to(device))
        mask_prompt = (
            torch.zeros(lowres_shape, device=device)
            if prev_low_res_mask is None
            else prev_low_res_mask.to(device)
        )
        coords = torch.zeros(1, 0, 3, device=device)
        labels = torch.zeros(1, 0, device=device)
        current = torch.zeros(size, dtype=torch.bool)
        clicks: list[Click] = []
        lowres = None
        for _ in range(num_clicks):
            click = _next_click(current, roi_gt, size, first=not clicks, rng=rng)
            if click is None:
                break
            clicks.append(click)
            # Every click so far is fed again; coordinates and labels travel as float32.
            as_float = {"dtype": torch.float32, "device": device}
            coords = torch.cat([coords, torch.tensor([[click.point]], **as_float)], dim=1)
            labels = torch.cat([labels, torch.tensor([[click.label]], **as_float)], dim=1)
            sparse, dense = model.prompt_encoder(
                points=(coords, labels), boxes=None, masks=mask_prompt
            )
            lowres, _ = model.mask_decoder(
                image_embeddings=embeddings,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            mask_prompt = lowres.detach()
            current = _to_mask(lowres, size)[0, 0].cpu()
        final = _to_mask(lowres, size)[0, 0]
    return final.cpu().numpy().astype(np.uint8), clicks


def _next_click(
    current: torch.Tensor,
    roi_gt: Optional[torch.Tensor],
    size: Sequence[int],
    first: bool,
    rng: RNG,
) -> Optional[Click]:
    """Click for the next round; without GT only a first, centred, positive click exists."""
    if roi_gt is None:
        if not first:
            warnings.warn(
                "no ground truth: clicks after the first cannot be simulated", stacklevel=3
            )
            return None
        return Click(tuple(s // 2 for s in size), 1)  # type: ignore[arg-type]
    point, label = random_sample_next_click(current, roi_gt[0, 0].cpu(), method="random", rng=rng)
    return Click(tuple(int(v) for v in point.reshape(3)), int(label))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- whole case

Predictor = Callable[[OfficialCase, RNG], tuple[np.ndarray, list[Click]]]


def _read_gt(gt_path: str | os.PathLike) -> tuple["sitk.Image", np.ndarray, list[int]]:
    """GT as SimpleITK image and ``(z,y,x)`` array, plus its sorted non-zero values."""
    import SimpleITK as sitk

    gt = sitk.ReadImage(str(gt_path))
    arr = sitk.GetArrayFromImage(gt)
    categories = [int(v) for v in np.unique(arr) if v != 0]
    return gt, arr, categories


def run_official_protocol(
    img_path: str | os.PathLike,
    gt_path: str | os.PathLike,
    predict: Predictor,
    crop_size: int = DEFAULT_CROP,
    target_spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = DEFAULT_SEED,
) -> tuple[np.ndarray, "sitk.Image", list[dict[str, Any]]]:
    """The per-case loop of ``validate_paired_img_gt`` with the ROI predictor injected.

    ``predict(case, rng)`` returns the ``(S,S,S)`` ROI prediction and its clicks; it must draw its
    clicks from ``rng`` so that the seed chain (one stream per case, classes in sorted order)
    matches upstream.

    Returns:
        the merged uint8 canvas ``(z,y,x)`` on the GT grid, the GT SimpleITK image (geometry
        source for writing), and one info dict per class.
    """
    gt_image, gt_arr, categories = _read_gt(gt_path)
    canvas = np.zeros(gt_arr.shape, dtype=np.uint8)
    subject = load_official_subject(img_path, gt_path)
    rng = np.random.RandomState(seed)
    infos: list[dict[str, Any]] = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for category in categories:
            case = preprocess_subject(subject, category, crop_size, target_spacing)
            pred_roi, clicks = predict(case, rng)
            pasted = postprocess_official(pred_roi, case)
            if pasted.shape != canvas.shape:
                raise InvalidImageError(
                    f"image grid {pasted.shape[::-1]} (x,y,z) differs from the GT grid "
                    f"{canvas.shape[::-1]}; the official protocol needs them identical"
                )
            canvas[pasted == 1] = category
            infos.append(_case_info(case, pred_roi, pasted, clicks))
    return canvas, gt_image, infos


def _case_info(
    case: OfficialCase, pred_roi: np.ndarray, pasted: np.ndarray, clicks: list[Click]
) -> dict[str, Any]:
    """Plain-data summary of one class (JSON-friendly)."""
    return {
        "category": case.category,
        "clicks": list(clicks),
        "canonical_shape": case.canonical_shape,
        "roi_affine_ras": case.roi_affine_ras.tolist(),
        "applied_padding": case.applied_padding,
        "applied_cropping": case.applied_cropping,
        "znorm_mean": case.znorm_mean,
        "znorm_std": case.znorm_std,
        "roi_label_voxels": int((case.roi_label != 0).sum()),
        "pred_roi_voxels": int(np.count_nonzero(pred_roi)),
        "pasted_voxels": int(np.count_nonzero(pasted)),
        "warnings": list(case.warnings),
    }


def _write_like(canvas: np.ndarray, reference: "sitk.Image", out_path: str | os.PathLike) -> None:
    """Write ``canvas`` (z,y,x) with the reference geometry, atomically (temp file + rename).

    The temp file keeps the target's extension so SimpleITK picks the same writer.
    """
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(canvas)
    out.SetOrigin(reference.GetOrigin())
    out.SetDirection(reference.GetDirection())
    out.SetSpacing(reference.GetSpacing())
    with atomic_path(out_path) as tmp:
        sitk.WriteImage(out, str(tmp))


def validate_paired_img_gt(
    model: torch.nn.Module,
    img_path: str | os.PathLike,
    gt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    num_clicks: int = 1,
    crop_size: int = DEFAULT_CROP,
    target_spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Upstream ``validate_paired_img_gt``: segment every GT class and write the merged labels.

    Image and GT must share one grid. The output has the GT's shape, origin, spacing and
    direction, uint8, written atomically.

    Returns:
        ``{"out_path", "categories", "classes": [per-class info dicts with "clicks", ...]}``.
    """

    def predict(case: OfficialCase, rng: RNG) -> tuple[np.ndarray, list[Click]]:
        return sam_model_infer_official(
            model, case.roi_image, case.roi_label, num_clicks=num_clicks, rng=rng
        )

    canvas, gt_image, infos = run_official_protocol(
        img_path, gt_path, predict, crop_size, target_spacing, seed
    )
    _write_like(canvas, gt_image, out_path)
    return {
        "out_path": str(out_path),
        "categories": [info["category"] for info in infos],
        "classes": infos,
    }
