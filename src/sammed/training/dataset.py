"""Training data: nnU-Net folders, an offline cache at the model's spacing, and random windows.

The cache resamples each case once onto a canonical RAS grid at the model's spacing with the
same function inference uses for its window (:func:`sammed.inference.roi.sample_window`: linear,
zero outside, source pixel type kept), and labels with nearest neighbour on the same grid. A
training window is then an integer crop of that grid, normalised with the inference function
:func:`~sammed.inference.roi.zscore_foreground`, so what the model sees in training is what it
sees at inference (the official pipeline also resamples the whole volume first, then crops).

Each (case, class) pair with enough voxels is one item with a binary target (the official
"one binary mask per class" layout, built on the fly from multi-class label maps).
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from sammed.errors import InvalidImageError, SammedError
from sammed.geometry import RoiGrid, canonical_grid, resample_onto  # noqa: F401  (canonical_grid re-exported)
from sammed.inference.roi import sample_window, zscore_foreground
from sammed.io import read_image
from sammed.io.atomic import atomic_path, write_text_atomic
from sammed.io.image import Geometry
from sammed.io.readers import to_sitk
from sammed.training.config import GAMMA_DOMAINS

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
CACHE_VERSION = 1
MANIFEST = "manifest.json"


class TrainingDataError(SammedError):
    """The training folder is missing, empty or inconsistent."""


@dataclass(frozen=True)
class CaseFiles:
    """One nnU-Net case: ``imagesTr/<id>_0000.<ext>`` and ``labelsTr/<id>.<ext>``."""

    case_id: str
    image: Path
    label: Path


def _strip_suffix(name: str) -> tuple[str, str] | None:
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def find_nnunet_cases(root: str | os.PathLike) -> list[CaseFiles]:
    """List the cases of an nnU-Net raw folder (first channel ``_0000`` only)."""
    root = Path(root)
    images, labels = root / "imagesTr", root / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise TrainingDataError(f"{root} is not an nnU-Net dataset folder (needs imagesTr/ and labelsTr/)")
    label_files = {}
    for path in labels.iterdir():
        parsed = _strip_suffix(path.name)
        if parsed:
            label_files[parsed[0]] = path
    cases = []
    for path in sorted(images.iterdir()):
        parsed = _strip_suffix(path.name)
        if not parsed or not parsed[0].endswith("_0000"):
            continue
        case_id = parsed[0][: -len("_0000")]
        if case_id not in label_files:
            raise TrainingDataError(f"image {path.name} has no label file labelsTr/{case_id}.* in {root}")
        cases.append(CaseFiles(case_id, path, label_files[case_id]))
    if not cases:
        raise TrainingDataError(f"no training cases (imagesTr/*_0000.nii.gz) in {root}")
    return cases


def resample_labels(source: sitk.Image, grid: Geometry) -> np.ndarray:
    """Nearest-neighbour label resampling onto ``grid`` (zero outside), as ``[A0, A1, A2]``."""
    return resample_onto(source, grid, "nearest", outside=0.0, pixel_id=sitk.sitkUInt16)


def _atomic_save_npz(path: Path, **arrays) -> None:
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def _source_stamp(case: CaseFiles) -> list:
    return [[str(p.name), p.stat().st_size, int(p.stat().st_mtime)] for p in (case.image, case.label)]


def build_cache(root: str | os.PathLike, cache_dir: str | os.PathLike, spacing_mm: float, progress=None) -> dict:
    """Resample every case of ``root`` to ``spacing_mm`` once; return the manifest.

    Cases whose source files and spacing are unchanged are kept. The manifest lists, per case,
    the voxel count of every label value, so datasets are built without opening the volumes.
    """
    cases = find_nnunet_cases(root)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / MANIFEST
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    compatible = old.get("version") == CACHE_VERSION and old.get("spacing_mm") == spacing_mm
    entries = {}
    for case in cases:
        previous = old.get("cases", {}).get(case.case_id) if compatible else None
        target = cache_dir / f"{case.case_id}.npz"
        if previous and previous["stamp"] == _source_stamp(case) and target.is_file():
            entries[case.case_id] = previous
            continue
        if progress is not None:
            progress(case.case_id)
        entries[case.case_id] = _cache_case(case, target, spacing_mm)
    manifest = {"version": CACHE_VERSION, "spacing_mm": spacing_mm, "cases": entries}
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1))
    return manifest


def _cache_case(case: CaseFiles, target: Path, spacing_mm: float) -> dict:
    image = read_image(case.image)
    label = read_image(case.label)
    if image.ndim != 3 or label.ndim != 3:
        raise TrainingDataError(f"case {case.case_id}: training needs 3D images and labels")
    grid = canonical_grid(image.geometry, spacing_mm)
    window = sample_window(to_sitk(image), RoiGrid(grid))
    label_array = np.rint(label.array).astype(np.int64)
    if label_array.min() < 0 or label_array.max() > 65535:
        raise TrainingDataError(f"case {case.case_id}: label values must lie in 0..65535")
    labels = resample_labels(to_sitk(label.with_array(label_array.astype(np.uint16))), grid)
    values, counts = np.unique(labels, return_counts=True)
    _atomic_save_npz(target, image=window, label=labels, origin=np.asarray(grid.origin), spacing=np.asarray(grid.spacing))
    return {
        "stamp": _source_stamp(case),
        "shape": list(grid.size),
        "classes": {str(int(v)): int(c) for v, c in zip(values, counts) if v != 0},
    }


@dataclass(frozen=True)
class Item:
    case_id: str
    class_id: int


def cases_matching(case_ids: list[str], pattern: str, option: str) -> np.ndarray:
    """Which of ``case_ids`` the shell ``pattern`` matches; a pattern that matches none is refused,
    naming ``option``: a typo would otherwise silently train on another mixture."""
    hits = np.array([fnmatch.fnmatchcase(case_id, pattern) for case_id in case_ids], dtype=bool)
    if not hits.any():
        raise TrainingDataError(f"{option} {pattern!r} matches no case of the training data")
    return hits


def list_items(manifest: dict, min_voxels: int, classes: set[int] | None = None,
               exclude_cases: tuple[str, ...] = ()) -> list[Item]:
    """(case, class) pairs whose mask has more than ``min_voxels`` voxels at the cache spacing,
    from cases whose id matches none of the ``exclude_cases`` shell patterns. A pattern that
    matches no case is refused: a typo would otherwise silently train on everything."""
    case_ids = sorted(manifest["cases"])
    excluded = np.zeros(len(case_ids), dtype=bool)
    for pattern in exclude_cases:
        excluded |= cases_matching(case_ids, pattern, "--exclude-cases")
    kept = [c for c, out in zip(case_ids, excluded) if not out]
    items = [
        Item(case_id, int(value))
        for case_id in kept
        for value, count in sorted(manifest["cases"][case_id]["classes"].items(), key=lambda kv: int(kv[0]))
        if count > min_voxels and (classes is None or int(value) in classes)
    ]
    if not items:
        raise TrainingDataError(f"no class mask has more than {min_voxels} voxels; lower --min-voxels")
    return items


def _crop_slices(shape: tuple[int, ...], start: np.ndarray, size: int) -> tuple[tuple, tuple] | None:
    """(source, destination) slices of a ``size``^3 crop from ``start``; None when it misses the volume."""
    src, dst = [], []
    for axis in range(3):
        lo, hi = start[axis], start[axis] + size
        s_lo, s_hi = max(lo, 0), min(hi, shape[axis])
        if s_hi <= s_lo:
            return None
        src.append(slice(s_lo, s_hi))
        dst.append(slice(s_lo - lo, s_hi - lo))
    return tuple(src), tuple(dst)


def crop_with_padding(volume: np.ndarray, start: np.ndarray, size: int) -> np.ndarray:
    """``size``^3 block of ``volume`` from ``start`` (may be negative or overhang), zero outside."""
    out = np.zeros((size,) * 3, dtype=volume.dtype)
    slices = _crop_slices(volume.shape, start, size)
    if slices is not None:
        out[slices[1]] = volume[slices[0]]
    return out


def crop_inside(shape: tuple[int, ...], start: np.ndarray, size: int) -> np.ndarray:
    """Which voxels of that crop lie inside the volume (the rest is :func:`crop_with_padding`'s zeros)."""
    inside = np.zeros((size,) * 3, dtype=bool)
    slices = _crop_slices(shape, start, size)
    if slices is not None:
        inside[slices[1]] = True
    return inside


class WorkerRng:
    """A NumPy generator per DataLoader worker, seeded from the worker's torch seed (new on each new worker)."""

    def __init__(self) -> None:
        self._seed: int | None = None
        self._rng = np.random.default_rng(0)

    def __call__(self) -> np.random.Generator:
        seed = torch.initial_seed()
        if seed != self._seed:
            self._seed, self._rng = seed, np.random.default_rng(seed % (2**63))
        return self._rng


def rescale_window(window: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a cubic crop to ``size``^3: intensities trilinear, labels nearest neighbour.

    A crop of ``c`` cache voxels shown as ``size`` voxels is the same anatomy seen at a window
    spacing of ``c / size`` times the model's: the scale augmentation.
    """
    image_t = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None, None]
    label_t = torch.from_numpy(np.ascontiguousarray(labels).astype(np.float32))[None, None]
    image_t = torch.nn.functional.interpolate(image_t, size=(size,) * 3, mode="trilinear", align_corners=False)
    label_t = torch.nn.functional.interpolate(label_t, size=(size,) * 3, mode="nearest")
    return image_t[0, 0].numpy(), label_t[0, 0].numpy().astype(labels.dtype)


REMAP_FLAT = 0.15  # share of the robust intensity range that the contrast remap keeps at 0


@dataclass(frozen=True)
class Augmentations:
    """Augmentations beyond the official flips, each aimed at a failure of small models.

    * ``scale_range``: the window shows ``s`` times the model's field of view, ``s`` log-uniform
      in the range, so one organ is seen at many sizes (large organs were under-segmented, thin
      ones over-segmented when every window had the same scale);
    * ``permute_probability``: that often the three axes are permuted at random, so sagittal or
      coronal acquisitions and anisotropic slabs do not look new;
    * ``intensity_probability``: each intensity transform (MONAI's gamma contrast before the
      z-score; Gaussian noise, a smooth multiplicative bias field and a contrast scale after it)
      runs with this probability, so the model does not key on one scanner's intensities;
    * ``remap_probability``: that often the raw window goes through a random non-monotonic
      intensity map (:meth:`remap_contrast`), so one scan's organs are also seen in other
      contrasts. The other transforms keep the order of intensities, and a CT's organs then
      teach nothing about an MR, where fat is bright and bone dark;
    * ``bias_field_max``: the upper end of MONAI's ``RandBiasField`` coefficient range. The
      default, 0.4, is what versions 2 and 3 were trained with; its field's maximum is about 50
      at the median (up to about 120), so windows reach z-scores in the hundreds. MONAI's own
      default, 0.1, is a scanner-like field;
    * ``gamma_on``: ``"window"`` (versions 2 and 3) applies gamma to the window's min-max range,
      which on a CT moves tissue across the 0 HU line that the z-score's foreground is defined
      by; ``"foreground"`` applies it to the voxels > 0 only, over ``[0, max]``, so the
      foreground stays the same set of voxels.
    """

    scale_range: tuple[float, float] = (1.0, 1.0)
    permute_probability: float = 0.0
    intensity_probability: float = 0.0
    remap_probability: float = 0.0
    bias_field_max: float = 0.4
    gamma_on: str = "window"

    def __post_init__(self) -> None:
        if self.gamma_on not in GAMMA_DOMAINS:
            raise ValueError(f"gamma_on must be one of {GAMMA_DOMAINS}, got {self.gamma_on!r}")
        if not 0.0 <= self.bias_field_max <= 1.0:
            raise ValueError(f"bias_field_max must lie in [0, 1], got {self.bias_field_max}")

    def crop_size(self, window: int, rng: np.random.Generator) -> int:
        low, high = self.scale_range
        if low == high == 1.0:
            return window
        scale = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return max(int(round(window * scale)), 8)

    def intensity_transform(self):
        """MONAI transforms applied to the normalised window (None when disabled)."""
        if not self.intensity_probability:
            return None
        from monai.transforms import Compose, RandBiasField, RandGaussianNoise, RandScaleIntensity

        p = self.intensity_probability
        return Compose([RandGaussianNoise(prob=p, std=0.15), RandBiasField(prob=p, coeff_range=(0.0, self.bias_field_max)),
                        RandScaleIntensity(factors=0.25, prob=p)])

    def apply_before_normalisation(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gamma contrast on the raw intensities, relative to their range so HU and MR alike:
        the window's min-max range, or with ``gamma_on="foreground"`` the voxels > 0 over
        ``[0, max]`` (the rest untouched), which keeps the z-score's foreground as it was."""
        if rng.random() >= self.intensity_probability:
            return window
        gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
        if self.gamma_on == "foreground":
            top = float(window.max())
            if not (np.isfinite(top) and top > 0):
                return window
            out = window.astype(np.float32, copy=True)
            positive = out > 0
            # floored at the smallest positive float32: a tiny voxel must not underflow out of the foreground
            out[positive] = np.maximum(top * (out[positive] / top) ** gamma, np.finfo(np.float32).smallest_subnormal)
            return out
        from monai.transforms import AdjustContrast

        return np.asarray(AdjustContrast(gamma=gamma)(window), dtype=np.float32)

    def remap_contrast(self, window: np.ndarray, rng: np.random.Generator,
                       inside: np.ndarray | None = None) -> np.ndarray:
        """With ``remap_probability``: a random piecewise-linear map of the window's robust range
        (0.5-99.5 percentiles) onto [0, 1]. The bottom ``REMAP_FLAT`` of the range maps to 0, the
        rest through 6-24 evenly spaced control points with values uniform in [0.1, 1] (tissues at
        most 10 times apart, as in an MR; near-0 tissue would make the z-score explode).

        Why not MONAI's ``RandHistogramShift``: its map is monotonic, so tissue order never changes.
        Why a flat 0 at the bottom: air, lung (about -850 HU in a CT's -1000..1200 range) and
        background stay dark, as in an MR, and noisy air stays out of the model's z-score over
        voxels > 0. ``inside`` marks the voxels that are image (the rest is padding): the range
        is taken over them and padding stays 0, as it is at inference, instead of being mapped
        like a CT's 0 HU into tissue. Segments are linear, so edges inside one keep their sign.
        """
        if not self.remap_probability or rng.random() >= self.remap_probability:
            return window
        image = window if inside is None else window[inside]
        if image.size < 2:
            return window
        low, high = np.percentile(image, (0.5, 99.5))
        if not high > low:
            return window
        unit = np.clip((window - low) / (high - low), 0.0, 1.0)
        points = int(rng.integers(6, 25))
        knots = np.concatenate([[0.0], np.linspace(REMAP_FLAT, 1.0, points)])
        values = np.concatenate([[0.0, 0.0], rng.uniform(0.1, 1.0, points - 1)])
        out = np.interp(unit, knots, values).astype(np.float32)
        if inside is not None:
            out[~inside] = 0.0
        return out

    @staticmethod
    def apply_after_normalisation(transform, tensor: torch.Tensor) -> torch.Tensor:
        """``transform`` on the z-scored window, shifted so the multiplicative bias field sees
        positive values and background stays background."""
        floor = tensor.min()
        out = transform((tensor - floor)[None])[0] + floor
        return torch.as_tensor(out, dtype=torch.float32)


def case_factors(items: list[Item], case_weights: tuple[tuple[str, float], ...]) -> np.ndarray:
    """Per item, the product of the ``(pattern, weight)`` weights whose shell pattern matches its
    case id (1 where none does); a pattern that matches no case is refused (:func:`cases_matching`)."""
    case_ids = [item.case_id for item in items]
    factors = np.ones(len(items))
    for pattern, weight in case_weights:
        factors[cases_matching(case_ids, pattern, "--case-weights")] *= weight
    return factors


def item_weights(items: list[Item], pseudo_fraction: float | None, voxels: list[int] | None = None,
                 size_exponent: float = 0.0, case_weights: tuple[tuple[str, float], ...] = ()) -> torch.Tensor:
    """Sampling weight per item: pseudo-object items (case ids ``*__*``) get ``pseudo_fraction``
    of the draws, real labels the rest (``None``: each group in proportion to its weights);
    within each group, a case with ``n`` items weighs each ``1 / sqrt(n)``, so atlases with a
    hundred parcels do not crowd out scans with a few organs.

    ``size_exponent`` > 0 also multiplies each item by ``(voxels / median voxels) ** size_exponent``
    within its group: a scan's few large organs (liver, lungs) are otherwise drawn as rarely as
    each of its dozens of small ones, and a small model then learns to under-segment them.

    ``case_weights`` ``(pattern, w)`` multiplies the items of matching cases by ``w`` within their
    group (:func:`case_factors`): the mixture's shares per case are a choice, e.g. more draws from
    the one scan with real abdominal organ labels than from brain atlases."""
    per_case: dict[str, int] = {}
    for item in items:
        per_case[item.case_id] = per_case.get(item.case_id, 0) + 1
    raw = np.array([1.0 / np.sqrt(per_case[item.case_id]) for item in items])
    pseudo = np.array(["__" in item.case_id for item in items])
    if case_weights:
        raw *= case_factors(items, case_weights)
    if size_exponent:
        if voxels is None or len(voxels) != len(items):
            raise ValueError("size_exponent needs one voxel count per item")
        counts = np.maximum(np.asarray(voxels, dtype=float), 1.0)
        for group in (pseudo, ~pseudo):
            if group.any():
                raw[group] *= (counts[group] / np.median(counts[group])) ** size_exponent
    if pseudo_fraction is None:
        return torch.as_tensor(raw / raw.sum(), dtype=torch.double)
    weights = np.zeros(len(items))
    for mask, share in ((pseudo, pseudo_fraction), (~pseudo, 1.0 - pseudo_fraction)):
        if mask.any():
            weights[mask] = share * raw[mask] / raw[mask].sum()
    if weights.sum() == 0:
        weights[:] = 1.0
    return torch.as_tensor(weights, dtype=torch.double)


def item_voxels(manifest: dict, items: list[Item]) -> list[int]:
    """Each item's mask size in voxels at the cache spacing (from the cache manifest)."""
    return [int(manifest["cases"][item.case_id]["classes"][str(item.class_id)]) for item in items]


class WindowDataset(Dataset):
    """Random ``window``^3 crops around one class mask, with random flips; binary float targets.

    The window is centred on the mask's bounding-box centre (the official CropOrPad) plus a
    uniform random offset of up to ``max_shift_fraction * window`` voxels per axis.

    ``targets_per_window`` > 1 adds up to that many minus one other classes of the same case that
    the window shows (at least ``min_extra_target_voxels`` voxels inside it) as further targets
    of the same image: the trainer encodes the window once and decodes every target from its
    own clicks. Same image, different clicks, different masks is what teaches a small model to
    use its prompts; SAM trains on many masks per image for the same reason. ``label`` is then
    ``(targets_per_window, S, S, S)`` and ``target_valid`` says which rows are real.

    ``slab_probability`` keeps, that often, only a slab of 8-32 planes along a random axis (zero
    intensity and no labels elsewhere, as outside a scan): limited-coverage scans such as a
    20-slice series show organs cut by the field of view, which whole-volume crops never do.

    ``centre_on_click`` centres the window on a uniform voxel of the target instead, and returns
    that voxel as the first click (``first_click``; NaN rows: draw as usual). That is how
    :class:`sammed.inference.Session` builds its window around a user's first click, so the
    model trains on the inference situation.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        items: list[Item],
        window: int,
        max_shift_fraction: float = 0.25,
        flip_probability: float = 0.5,
        max_cached_cases: int = 8,
        targets_per_window: int = 1,
        min_extra_target_voxels: int = 64,
        slab_probability: float = 0.0,
        centre_on_click: bool = False,
        augment: Augmentations | None = None,
        extra_target_size_exponent: float = 0.0,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.items = items
        self.window = window
        self.max_shift = int(round(max_shift_fraction * window))
        self.flip_probability = flip_probability
        self.max_cached_cases = max_cached_cases
        self.targets_per_window = targets_per_window
        self.min_extra_target_voxels = min_extra_target_voxels
        self.extra_target_size_exponent = extra_target_size_exponent
        self.slab_probability = slab_probability
        self.centre_on_click = centre_on_click
        self.augment = augment or Augmentations()
        self._intensity = self.augment.intensity_transform()
        self._allowed_classes: dict[str, set[int]] = {}
        for item in items:
            self._allowed_classes.setdefault(item.case_id, set()).add(item.class_id)
        self._cases: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._generator = WorkerRng()

    def __len__(self) -> int:
        return len(self.items)

    def _case(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        if case_id not in self._cases:
            if len(self._cases) >= self.max_cached_cases:
                self._cases.pop(next(iter(self._cases)))
            with np.load(self.cache_dir / f"{case_id}.npz") as data:
                self._cases[case_id] = (data["image"], data["label"])
        return self._cases[case_id]

    def __getitem__(self, index: int) -> dict:
        rng = self._generator()
        for _ in range(10):
            try:
                return self._sample(self.items[index], rng)
            except InvalidImageError:  # window without intensities > 0: draw another item
                index = int(rng.integers(len(self.items)))
        raise TrainingDataError("could not draw a window with foreground intensities after 10 tries")

    def _sample(self, item: Item, rng: np.random.Generator) -> dict:
        image, label = self._case(item.case_id)
        crop = self.augment.crop_size(self.window, rng)
        half = crop // 2
        if self.centre_on_click:
            inside = np.argwhere(label == item.class_id)
            start = inside[rng.integers(len(inside))] - half
            labels = crop_with_padding(label, start, crop)
        else:
            start, labels = self._bbox_centred_start(label, item.class_id, rng, crop)
        window = crop_with_padding(image, start, crop)
        if self.augment.remap_probability:  # here, where padding is still known from the crop
            window = self.augment.remap_contrast(window, rng, crop_inside(image.shape, start, crop))
        if crop != self.window:
            window, labels = rescale_window(window, labels, self.window)
            if not (labels == item.class_id).any():  # scaled away (thin object): no scale this time
                return self._sample_unscaled(item, rng)
        click = self._first_click(labels, item.class_id, rng) if self.centre_on_click else None
        return self._finish(window, labels, item, click, rng)

    def _sample_unscaled(self, item: Item, rng: np.random.Generator) -> dict:
        saved, self.augment = self.augment, replace(self.augment, scale_range=(1.0, 1.0))
        try:
            return self._sample(item, rng)
        finally:
            self.augment = saved

    def _first_click(self, labels: np.ndarray, class_id: int, rng: np.random.Generator) -> np.ndarray:
        """The window centre, which the crop put on a target voxel; after rescaling the target
        voxel nearest to the centre is not always the centre itself, then a random target voxel."""
        centre = np.full(3, self.window // 2)
        if labels[tuple(centre)] == class_id:
            return centre
        inside = np.argwhere(labels == class_id)
        return inside[rng.integers(len(inside))]

    def _finish(self, window: np.ndarray, labels: np.ndarray, item: Item, click: np.ndarray | None,
                rng: np.random.Generator) -> dict:
        if self.slab_probability and rng.random() < self.slab_probability:
            window, labels = self._keep_slab(window, labels, item.class_id, rng, through=click)
        for axis in range(3):
            if rng.random() < self.flip_probability:
                window, labels = np.flip(window, axis), np.flip(labels, axis)
                if click is not None:
                    click[axis] = self.window - 1 - click[axis]
        if self.augment.permute_probability and rng.random() < self.augment.permute_probability:
            order = rng.permutation(3)
            window, labels = np.transpose(window, order), np.transpose(labels, order)
            if click is not None:
                click = click[order]
        window = np.ascontiguousarray(window, dtype=np.float32)
        if self._intensity is not None:
            window = self.augment.apply_before_normalisation(window, rng)
        tensor = zscore_foreground(window)
        if self._intensity is not None:
            self._intensity.set_random_state(seed=int(rng.integers(2**31 - 1)))
            tensor = self.augment.apply_after_normalisation(self._intensity, tensor)
        classes = [item.class_id] + self._extra_classes(item, labels, rng)
        targets = np.zeros((self.targets_per_window,) + labels.shape, dtype=np.float32)
        for row, class_id in enumerate(classes):
            targets[row] = labels == class_id
        valid = torch.zeros(self.targets_per_window, dtype=torch.bool)
        valid[: len(classes)] = True
        first_click = torch.full((self.targets_per_window, 3), float("nan"))
        if click is not None:
            first_click[0] = torch.from_numpy(np.asarray(click, dtype=np.float32))
        return {
            "image": tensor[None],
            "label": torch.from_numpy(targets),
            "target_valid": valid,
            "first_click": first_click,
            "case_id": item.case_id,
            "class_id": item.class_id,
        }

    def _bbox_centred_start(self, label: np.ndarray, class_id: int, rng: np.random.Generator,
                            crop: int) -> tuple[np.ndarray, np.ndarray]:
        """Official window: bounding-box centre plus a random offset (the centre if that misses)."""
        nonzero = np.argwhere(label == class_id)
        low, high = nonzero.min(axis=0), nonzero.max(axis=0) + 1
        centre = (low + high) // 2
        max_shift = int(round(self.max_shift * crop / self.window))
        shift = rng.integers(-max_shift, max_shift + 1, size=3) if max_shift else np.zeros(3, int)
        start = centre + shift - crop // 2
        labels = crop_with_padding(label, start, crop)
        if not (labels == class_id).any():  # an offset can miss thin or hollow shapes: fall back to the centre
            start = centre - crop // 2
            labels = crop_with_padding(label, start, crop)
        return start, labels

    @staticmethod
    def _keep_slab(window: np.ndarray, labels: np.ndarray, class_id: int, rng: np.random.Generator,
                   through: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Blank everything outside a random slab through ``through`` (default: a random target voxel)."""
        axis = int(rng.integers(3))
        thickness = int(rng.integers(8, 33))
        if through is None:
            inside = np.argwhere(labels == class_id)
            through = inside[rng.integers(len(inside))]
        through = int(through[axis])
        first = max(through - int(rng.integers(thickness)), 0)
        outside = np.ones(window.shape[axis], dtype=bool)
        outside[first: first + thickness] = False
        shape = [1, 1, 1]
        shape[axis] = -1
        outside = outside.reshape(shape)
        return np.where(outside, 0, window).astype(window.dtype), np.where(outside, 0, labels).astype(labels.dtype)

    def _extra_classes(self, item: Item, labels: np.ndarray, rng: np.random.Generator) -> list[int]:
        """Other trainable classes of this case that the window shows well enough, drawn at random:
        uniformly, or with ``extra_target_size_exponent`` A > 0 in proportion to (voxels in the
        window) ** A, so a large organ the window shows is not one draw among many small ones."""
        if self.targets_per_window <= 1:
            return []
        values, counts = np.unique(labels, return_counts=True)
        allowed = self._allowed_classes.get(item.case_id, set())
        candidates = [int(v) for v, c in zip(values, counts)
                      if v != 0 and int(v) != item.class_id and int(v) in allowed and c >= self.min_extra_target_voxels]
        if len(candidates) > self.targets_per_window - 1:
            weights = None
            if self.extra_target_size_exponent:
                sizes = dict(zip(values.tolist(), counts.tolist()))
                raw = np.array([float(sizes[v]) for v in candidates]) ** self.extra_target_size_exponent
                weights = raw / raw.sum()
            candidates = [int(v) for v in rng.choice(candidates, self.targets_per_window - 1, replace=False, p=weights)]
        return candidates
