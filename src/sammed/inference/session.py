"""Interactive 3D segmentation of one volume: clicks and boxes in, masks in the file's geometry out.

``Session(model, image)`` keeps, per object, the accumulated clicks and the previous low-res
logits, and feeds both back at each click as the official ``sam_model_infer`` loop does. The
image embedding of a window is computed once and cached, so a refinement click inside the same
window runs only the prompt encoder and the mask decoder.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from sammed.errors import PromptError
from sammed.inference.mask_prompt import (
    MASK_PROMPT_LOGIT,
    cells_touched,
    cropped_mask_image,
    logits_from_fraction,
    window_fraction,
)
from sammed.inference.precision import autocast, resolve_precision
from sammed.inference.roi import (
    RoiGrid,
    bounding_box,
    covered_region,
    paste_window_mask,
    sample_window,
    zscore_foreground,
)
from sammed.inference.scribble import (
    LassoEdit,
    initial_mask_region,
    interior_points,
    lasso_fill,
    sample_polyline,
    scribble_voxels,
)
from sammed.inference.window_paste import WindowPastePlan, plan_for
from sammed.io.dicom_seg import looks_like_dicom_input
from sammed.io.image import Image
from sammed.io.readers import to_sitk
from sammed.io.validation import validate_volume
from sammed.io.writers import segmentation_suffix, write_labels
from sammed.models.promptable import PromptableModel3D
from sammed.models.registry import spec_of
from sammed.prompts import Box, Convention, Point, Space

_EMBEDDING_CACHE_SIZE = 4
# A new object's first prompt reuses an already-encoded window when it lies at least this many
# window voxels (48 mm at 1.5 mm) inside it: one encoder pass then serves several nearby objects.
REUSE_MARGIN_VOXELS = 32


@dataclass(frozen=True)
class ObjectState:
    """One object after some interactions; immutable so undo/redo can keep snapshots."""

    clicks: tuple[tuple[tuple[float, float, float], int], ...] = ()  # (world LPS, 1 pos / 0 neg)
    box_corners: np.ndarray | None = None  # (8, 3) world LPS
    roi: RoiGrid | None = None
    low_res: torch.Tensor | None = None  # (1, 1, 32, 32, 32) logits, fed back at the next click
    region: tuple[slice, ...] | None = None  # bounding box of the mask on the original grid
    region_mask: np.ndarray | None = None  # bool mask on ``region`` (None when empty)
    iou: float | None = None
    extra_windows: tuple[RoiGrid, ...] = ()  # neighbour windows that extended the object
    # The mask came from a mask prompt (initial mask, lasso): a window without previous logits
    # takes its mask prompt from the current mask, and voxels outside every decoded window keep it.
    seeded: bool = False
    edits: tuple[LassoEdit, ...] = ()  # lassos, re-applied after each prediction

    @property
    def is_empty(self) -> bool:
        return not self.clicks and self.box_corners is None and self.region is None and not self.edits


@dataclass
class _Action:
    object_id: int
    before: ObjectState
    after: ObjectState


@dataclass
class SessionTimings:
    """Seconds spent in the last interaction, by stage (for benchmarks and progress display)."""

    encoder: float = 0.0
    decoder: float = 0.0
    total: float = 0.0
    encoder_calls: int = 0
    extra: dict = field(default_factory=dict)


class Session:
    """Stateful promptable segmentation of one 3D image with a promptable 3D model.

    Prompts are points or boxes in voxel ``(i, j, k)`` of the file or world mm (RAS or LPS).
    Object ids start at 1; the label map writes later objects over earlier ones. The model is
    used only through :class:`~sammed.models.promptable.PromptableModel3D`.
    """

    def __init__(
        self,
        model: PromptableModel3D,
        image: Image,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        max_windows: int = 1,
        validate: bool = True,
        protect_existing: bool = False,
    ) -> None:
        """``validate=False``: the caller has already run ``validate_volume`` on ``image`` (it reads
        every voxel, so the command line does it once, before the model loads).

        ``protect_existing=True``: an object never takes voxels other objects already hold (they
        enter its mask prompt as background), and the label map never overwrites a label."""
        if validate:
            validate_volume(image)
        if not isinstance(model, PromptableModel3D):
            raise TypeError(f"{type(model).__name__} is not a promptable 3D model (see sammed.models.promptable)")
        self.image = image
        if isinstance(model, nn.Module):  # a PyTorch model goes where it is asked to run
            if device is not None:
                model = model.to(device)
            model = model.eval()
        self.device = torch.device(device) if device is not None else model.device
        self.precision = resolve_precision(precision, self.device)
        self.model = model
        self.roi_size = model.window_voxels
        self.roi_spacing = model.window_spacing_mm
        self._source: sitk.Image = to_sitk(image)
        self._objects: dict[int, ObjectState] = {}
        self._undo: list[_Action] = []
        self._redo: list[_Action] = []
        self._embeddings: OrderedDict[tuple, tuple[RoiGrid, torch.Tensor]] = OrderedDict()
        self._paste_plans: OrderedDict[tuple, WindowPastePlan | None] = OrderedDict()
        self.active_object = 1
        self._names: dict[int, str] = {}  # object id -> name (segment names in .seg.nrrd / DICOM-SEG)
        self.timings = SessionTimings()
        if max_windows < 1:
            raise PromptError(f"max_windows must be at least 1, got {max_windows}")
        # 1 = one model window per object (the official behaviour); more lets a structure
        # larger than a window grow into 50%-overlapping neighbours (see _follow_across_windows).
        self.max_windows = max_windows
        self._cache_size = max(_EMBEDDING_CACHE_SIZE, max_windows + 2)
        self.protect_existing = protect_existing

    # ------------------------------------------------------------------ objects
    @property
    def object_ids(self) -> list[int]:
        return sorted(i for i, s in self._objects.items() if not s.is_empty)

    def new_object(self, name: str | None = None) -> int:
        """Start a new object; later prompts go to it unless another id is given.

        ``name`` labels it in the files that keep names (Slicer's .seg.nrrd, DICOM-SEG).
        """
        self.active_object = max([0, *self._objects, *self._names, self.active_object]) + 1
        if name is not None:
            self.set_name(self.active_object, name)
        return self.active_object

    def set_name(self, object_id: int, name: str) -> None:
        """Name (or rename) an object; an empty name falls back to 'object N'."""
        if object_id < 1:
            raise PromptError(f"object ids start at 1, got {object_id}")
        name = str(name).strip()
        if any(ord(c) < 32 for c in name) or len(name) > 64:
            raise PromptError("an object name is one line of at most 64 characters")
        if name:
            self._names[object_id] = name
        else:
            self._names.pop(object_id, None)

    def object_name(self, object_id: int) -> str:
        return self._names.get(object_id, f"object {object_id}")

    @property
    def names(self) -> dict[int, str]:
        """The names given to objects (id -> name); unnamed objects are 'object N' in files."""
        return dict(self._names)

    def state(self, object_id: int | None = None) -> ObjectState:
        """An object's current state (read-only: does not change the active object)."""
        return self._objects.get(self.active_object if object_id is None else object_id, ObjectState())

    def _resolve(self, object_id: int | None) -> int:
        if object_id is None:
            return self.active_object
        if object_id < 1:
            raise PromptError(f"object ids start at 1, got {object_id}")
        self.active_object = object_id
        return object_id

    # ------------------------------------------------------------------ prompts
    def add_point(
        self,
        position,
        positive: bool = True,
        object_id: int | None = None,
        space: Space = "voxel",
        convention: Convention = "RAS",
    ) -> np.ndarray:
        """Add a click and return the object's new mask (bool, the image's shape)."""
        point = position if isinstance(position, Point) else Point(tuple(position), positive, space, convention)
        world = point.to_world_lps(self.image.geometry)
        oid = self._resolve(object_id)
        before = self.state(oid)
        label = 1 if point.positive else 0
        candidate = replace(before, clicks=before.clicks + ((tuple(world), label),))
        return self._apply(oid, before, candidate)

    def add_box(
        self,
        corner_a,
        corner_b=None,
        object_id: int | None = None,
        space: Space = "voxel",
        convention: Convention = "RAS",
    ) -> np.ndarray:
        """Add a 3D box (two opposite corners) and return the object's new mask.

        The box centres the model window. A model with box embeddings (``sam-med3d-turbo-bbox``)
        receives the box itself; SAM-Med3D-turbo has none, so the box centre becomes a positive
        click, which is how the official CVPR-25 baseline turns boxes into prompts.
        """
        box = corner_a if isinstance(corner_a, Box) else Box(tuple(corner_a), tuple(corner_b), space, convention)
        corners = box.corners_world_lps(self.image.geometry)
        oid = self._resolve(object_id)
        before = self.state(oid)
        candidate = replace(before, box_corners=corners)
        if not self.model.supports_boxes:
            center = tuple(corners.mean(axis=0))
            candidate = replace(candidate, clicks=before.clicks + ((center, 1),))
        return self._apply(oid, before, candidate)

    def add_initial_mask(self, mask, object_id: int | None = None, *, label: int | None = None) -> np.ndarray:
        """Start an object from an existing mask (refining e.g. TotalSegmentator's output); return it.

        ``mask`` is a bool array of the image's shape, or a label file on the image's grid
        (NIfTI/NRRD/MHA, DICOM-SEG, ``.seg.nrrd``) of which ``label`` is used (default: every
        non-zero voxel). It becomes the object's mask as given and the model's mask prompt; the
        window is centred on its bounding box, so the next click refines it. Undoable.
        """
        region, region_mask = initial_mask_region(mask, self.image, label)
        oid = self._target(object_id)
        if self.protect_existing:
            region, region_mask = self._settle(ObjectState(), ObjectState(), oid, (), region, region_mask)
            if region is None:
                raise PromptError("the initial mask lies entirely inside other objects (protect_existing)")
        low, high = np.array([s.start for s in region]), np.array([s.stop for s in region])
        center = self.image.geometry.index_to_world((low + high - 1) / 2.0, "LPS")
        roi = RoiGrid.centered_at(center, size=self.roi_size, spacing=self.roi_spacing)
        low_res = self._guarded(self._seed_logits(roi, region, region_mask), roi, oid)
        after = ObjectState(roi=roi, low_res=low_res, region=region, region_mask=region_mask, seeded=True)
        self._record(oid, self.state(oid), after)
        self.active_object = oid
        return self.mask(oid)

    def add_scribble(self, voxels_ijk, positive: bool = True, object_id: int | None = None) -> np.ndarray:
        """Add a scribble (a polyline of voxel positions (i, j, k)) and return the object's mask.

        SAM-Med3D takes points: the scribble becomes clicks of its sign spaced evenly along its
        length in mm (rule and reasons in :mod:`sammed.inference.scribble`).
        """
        ijk = scribble_voxels(voxels_ijk, self.image.shape)
        samples = sample_polyline(np.atleast_2d(self.image.geometry.index_to_world(ijk, "LPS")))
        oid = self._target(object_id)
        before = self.state(oid)
        clicks = tuple(((float(p[0]), float(p[1]), float(p[2])), int(positive)) for p in samples)
        mask = self._apply(oid, before, replace(before, clicks=before.clicks + clicks))
        self.active_object = oid
        return mask

    def add_lasso(
        self, polygon, axis: str = "k", index: int | None = None, positive: bool = True, object_id: int | None = None
    ) -> np.ndarray:
        """Add a closed polygon on slice ``index`` along ``axis`` and return the object's mask.

        Vertices are the two remaining voxel indices in order (``axis="k"``: (i, j)). The filled
        region enters the mask prompt (+ or - logits on that slice's cells) with clicks inside it,
        and is then added to (positive) or removed from (negative) the object, also after later
        clicks. Undoable.
        """
        if index is None:
            raise PromptError("a lasso needs the slice index it was drawn on")
        edit = replace(lasso_fill(polygon, axis, index, self.image.shape), positive=positive)
        voxels = edit.voxels()
        geometry = self.image.geometry
        filled_world = np.atleast_2d(geometry.index_to_world(voxels.astype(np.float64), "LPS"))
        points = np.atleast_2d(geometry.index_to_world(interior_points(voxels), "LPS"))
        oid = self._target(object_id)
        before = self.state(oid)
        clicks = tuple(((float(p[0]), float(p[1]), float(p[2])), int(positive)) for p in points)
        candidate = replace(
            before, clicks=before.clicks + clicks, edits=before.edits + (edit,), seeded=before.seeded or positive
        )
        after = self._predict(candidate, previous=before, oid=oid, cells=(filled_world, positive))
        self._record(oid, before, after)
        self.active_object = oid
        return self.mask(oid)

    def _target(self, object_id: int | None) -> int:
        """The object a prompt goes to, checked without changing the session."""
        oid = self.active_object if object_id is None else int(object_id)
        if oid < 1:
            raise PromptError(f"object ids start at 1, got {oid}")
        return oid

    # ------------------------------------------------------------------ history
    def undo(self) -> bool:
        """Revert the last interaction (of any object); False when there is nothing to undo."""
        if not self._undo:
            return False
        action = self._undo.pop()
        self._objects[action.object_id] = action.before
        self._redo.append(action)
        self.active_object = action.object_id
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        action = self._redo.pop()
        self._objects[action.object_id] = action.after
        self._undo.append(action)
        self.active_object = action.object_id
        return True

    def reset(self, object_id: int | None = None) -> None:
        """Clear one object (undoable), or everything including history when no id is given."""
        if object_id is None:
            self._objects.clear()
            self._undo.clear()
            self._redo.clear()
            self.active_object = 1
            return
        before = self.state(object_id)
        self._record(object_id, before, ObjectState())

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # ------------------------------------------------------------------ results
    def mask(self, object_id: int | None = None) -> np.ndarray:
        """Boolean mask of one object on the original grid."""
        state = self._objects.get(object_id if object_id is not None else self.active_object, ObjectState())
        full = np.zeros(self.image.shape, dtype=bool, order="F")  # F order: written without a transpose copy
        if state.region is not None:
            full[state.region] = state.region_mask
        return full

    def label_map(self) -> np.ndarray:
        """All objects as labels (object id) on the original grid; later ids overwrite earlier."""
        ids = self.object_ids
        dtype = np.uint8 if not ids or max(ids) <= 255 else np.uint16
        labels = np.zeros(self.image.shape, dtype=dtype, order="F")  # F order: written without a transpose copy
        for oid in ids:
            state = self._objects[oid]
            if state.region is not None:
                target = labels[state.region]
                # protect_existing: a label once written is never overwritten
                target[state.region_mask & (target == 0) if self.protect_existing else state.region_mask] = oid
        return labels

    def save(self, path: str | Path, object_id: int | None = None, *, dicom_source: str | Path | list | None = None) -> Path:
        """Write the label map (or one object's mask) atomically with the input's geometry.

        The suffix picks the format: a label image (.nii.gz, .nrrd, ...), a Slicer segmentation
        (.seg.nrrd) or a DICOM-SEG (.dcm, for DICOM inputs: ``dicom_source`` is the series folder,
        by default the image's own source) with the objects' names and colours.
        """
        if object_id is None:
            array, names = self.label_map(), self.names
        else:
            array, names = self.mask(object_id).astype(np.uint8), {1: self.object_name(object_id)}
        if dicom_source is None and self.image.source and segmentation_suffix(path) == ".dcm":
            dicom_source = self.image.source if looks_like_dicom_input(Path(self.image.source)) else None
        return write_labels(array, self.image, path, names=names, dicom_source=dicom_source, algorithm=self.algorithm)

    @property
    def algorithm(self) -> tuple[str, str]:
        """(model name, version) as DICOM-SEG's Algorithm Identification records them."""
        from sammed import __version__

        spec = spec_of(self.model)
        name = getattr(spec, "name", None) or getattr(self.model, "model_name", None) or type(self.model).__name__
        digest = getattr(spec, "sha256", None)
        return str(name), f"sammed {__version__}" + (f", weights sha256 {digest[:12]}" if digest else "")

    # ------------------------------------------------------------------ model
    def _apply(self, oid: int, before: ObjectState, candidate: ObjectState) -> np.ndarray:
        after = self._predict(candidate, previous=before, oid=oid)
        self._record(oid, before, after)
        return self.mask(oid)

    def _record(self, oid: int, before: ObjectState, after: ObjectState) -> None:
        self._objects[oid] = after
        self._undo.append(_Action(oid, before, after))
        self._redo.clear()

    def _plan_roi(self, state: ObjectState, previous: ObjectState) -> RoiGrid:
        """Keep the object's window while all prompts fit in it; otherwise centre a new one."""
        points = np.array([c for c, _ in state.clicks] + ([] if state.box_corners is None else list(state.box_corners)))
        if previous.roi is not None and previous.roi.contains(points):
            return previous.roi
        if previous.roi is None:
            for roi, _ in reversed(self._embeddings.values()):
                if roi.contains(points, margin_voxels=REUSE_MARGIN_VOXELS):
                    return roi
        span = points.max(axis=0) - points.min(axis=0)
        extent = self.roi_size * self.roi_spacing
        if np.any(span > extent):
            raise PromptError(
                f"this object's prompts span {span.max():.0f} mm, more than one {extent:.0f} mm model "
                "window; split it into several objects"
            )
        if state.box_corners is not None and not state.clicks:
            center = state.box_corners.mean(axis=0)
        elif previous.roi is None and len(state.clicks) == 1 and state.box_corners is None:
            center = np.asarray(state.clicks[0][0])
        else:
            center = (points.max(axis=0) + points.min(axis=0)) / 2
        return RoiGrid.centered_at(center, size=self.roi_size, spacing=self.roi_spacing)

    def _embedding(self, roi: RoiGrid) -> torch.Tensor:
        key = roi.key()
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key][1]
        window = zscore_foreground(sample_window(self._source, roi))
        with torch.inference_mode(), autocast(self.precision, self.device):
            start = time.perf_counter()
            embedding = self.model.encode(window[None, None].to(self.device))
            self.timings.encoder += time.perf_counter() - start
            self.timings.encoder_calls += 1
        self._embeddings[key] = (roi, embedding)
        while len(self._embeddings) > self._cache_size:
            self._embeddings.popitem(last=False)
        return embedding

    def _decode(self, roi: RoiGrid, embedding, clicks, mask_input, box_corners=None):
        """Prompt encoder + decoder in one window -> (low-res logits, IoU, window logits array)."""
        coords = labels = None
        if clicks:
            index = roi.to_index(np.array([c for c, _ in clicks]))
            coords = torch.as_tensor(index, dtype=torch.float32, device=self.device)[None]
            labels = torch.as_tensor([lbl for _, lbl in clicks], dtype=torch.float32, device=self.device)[None]
        boxes = None
        if box_corners is not None and self.model.supports_boxes:
            box_index = roi.to_index(box_corners)
            lo, hi = box_index.min(axis=0), box_index.max(axis=0)
            boxes = torch.as_tensor(np.concatenate([lo, hi]), dtype=torch.float32, device=self.device)[None]
        with torch.inference_mode(), autocast(self.precision, self.device):
            start = time.perf_counter()
            low_res, iou = self.model.decode(embedding, coords, labels, mask_input, boxes=boxes)
            low_res = low_res.float()  # fed back as the next mask prompt, kept in float32
            logits = self.model.upscale(low_res)[0, 0].float().cpu().numpy()
            self.timings.decoder += time.perf_counter() - start
        return low_res, float(iou.flatten()[0]), logits

    def _paste(self, roi: RoiGrid, low_res: torch.Tensor, logits: np.ndarray):
        """Window logits -> tight (region, mask) on the image's grid, as ``paste_window_mask``
        computes it; through the window's reusable plan when the grid is axis-aligned
        (sammed.inference.window_paste), which avoids a SimpleITK resample per click."""
        key = roi.key()
        if key not in self._paste_plans:
            self._paste_plans[key] = plan_for(roi, self.image.geometry, self.model.low_res_size)
            while len(self._paste_plans) > self._cache_size:
                self._paste_plans.popitem(last=False)
        self._paste_plans.move_to_end(key)
        plan = self._paste_plans[key]
        if plan is None:
            return paste_window_mask(logits, roi, self.image.geometry)
        return plan.paste(low_res[0, 0].cpu().numpy(), logits)

    def _predict(
        self, state: ObjectState, previous: ObjectState, oid: int | None = None, cells: tuple | None = None
    ) -> ObjectState:
        """``cells``: (world points, positive) of a lasso, written into the mask prompt."""
        self.timings = SessionTimings()
        start = time.perf_counter()
        roi = self._plan_roi(state, previous)
        embedding = self._embedding(roi)
        same_window = previous.roi is not None and previous.roi.key() == roi.key()
        if same_window and previous.low_res is not None:
            mask_input = previous.low_res
        elif previous.seeded and previous.region is not None and previous.region_mask is not None:  # new window
            mask_input = self._seed_logits(roi, previous.region, previous.region_mask)
        else:
            mask_input = self._zero_mask()
        mask_input = self._guarded(mask_input, roi, oid, cells)
        low_res, iou, logits = self._decode(roi, embedding, state.clicks, mask_input, state.box_corners)
        pieces = [self._paste(roi, low_res, logits)]
        extra: tuple[RoiGrid, ...] = ()
        if self.max_windows > 1:
            extra, more = self._follow_across_windows(roi, logits, low_res, previous, oid)
            pieces += more
        region, region_mask = _union(pieces, self.image.shape)
        if previous.seeded or state.edits or (self.protect_existing and oid is not None):
            region, region_mask = self._settle(state, previous, oid, (roi, *extra), region, region_mask)
        self.timings.total = time.perf_counter() - start
        return replace(
            state, roi=roi, low_res=low_res, region=region, region_mask=region_mask, iou=iou, extra_windows=extra
        )

    def _zero_mask(self) -> torch.Tensor:
        size = self.model.low_res_size
        return torch.zeros(1, 1, size, size, size, device=self.device)

    def _seed_logits(self, roi: RoiGrid, region: tuple[slice, ...], region_mask: np.ndarray) -> torch.Tensor:
        """An object's mask as the low-res mask prompt of ``roi`` (see sammed.inference.mask_prompt)."""
        image = cropped_mask_image(region, region_mask, self.image.geometry)
        return logits_from_fraction(window_fraction(image, roi, self.model.low_res_size)).to(self.device)

    def _guarded(self, mask_input: torch.Tensor, roi: RoiGrid, oid: int | None, cells: tuple | None = None) -> torch.Tensor:
        """The mask prompt with a lasso's cells set to its sign and, with ``protect_existing``,
        the cells other objects hold set to background."""
        if cells is None and not (self.protect_existing and oid is not None):
            return mask_input
        mask_input = mask_input.clone()
        size = self.model.low_res_size
        if cells is not None:
            world, positive = cells
            touched = torch.as_tensor(cells_touched(world, roi, size), device=mask_input.device)
            mask_input[0, 0][touched] = MASK_PROMPT_LOGIT if positive else -MASK_PROMPT_LOGIT
        if self.protect_existing and oid is not None:
            for other, state in self._objects.items():
                if other == oid or state.region is None or state.region_mask is None:
                    continue
                held = window_fraction(cropped_mask_image(state.region, state.region_mask, self.image.geometry), roi, size)
                mask_input[0, 0][torch.as_tensor(held >= 0.5, device=mask_input.device)] = -MASK_PROMPT_LOGIT
        return mask_input

    def _settle(self, state: ObjectState, previous: ObjectState, oid: int | None, windows, region, region_mask):
        """The final mask: a seeded object keeps its previous mask outside every decoded window,
        lassos are re-applied, and with ``protect_existing`` other objects' voxels are removed."""
        full = np.zeros(self.image.shape, dtype=bool)
        if region is not None:
            full[region] = region_mask
        if previous.seeded and previous.region is not None and previous.region_mask is not None and windows:
            inside = self._inside_windows(previous.region, previous.region_mask, windows)
            full[previous.region] |= previous.region_mask & ~inside
        for edit in state.edits:
            edit.apply(full)
        if self.protect_existing and oid is not None:
            for other, other_state in self._objects.items():
                if other != oid and other_state.region is not None and other_state.region_mask is not None:
                    full[other_state.region] &= ~other_state.region_mask
        box = bounding_box(full)
        if box is None:
            return None, None
        tight = tuple(slice(int(a), int(b)) for a, b in zip(*box))
        return tight, full[tight].copy()

    def _inside_windows(self, region: tuple[slice, ...], mask: np.ndarray, windows) -> np.ndarray:
        """Which True voxels of (region, mask) lie inside at least one of ``windows``."""
        inside = np.zeros(mask.shape, dtype=bool)
        voxels = np.argwhere(mask)
        for chunk in np.array_split(voxels, max(1, len(voxels) // 200_000)):
            world = self.image.geometry.index_to_world(chunk + [s.start for s in region], "LPS")
            hit = np.zeros(len(chunk), dtype=bool)
            for roi in windows:
                index = np.atleast_2d(roi.to_index(world))
                hit |= np.all((index >= -0.5) & (index <= roi.size - 0.5), axis=1)
            inside[tuple(chunk[hit].T)] = True
        return inside

    def _follow_across_windows(
        self,
        roi: RoiGrid,
        logits: np.ndarray,
        low_res: torch.Tensor,
        previous: ObjectState | None = None,
        oid: int | None = None,
    ):
        """Extend a structure larger than one window with 50%-overlapping neighbour windows.

        Whenever the mask reaches a face of a window and the image continues past it, a window
        shifted by half its size across that face is encoded and prompted with (a) a positive
        click at the strongest voxel of the shared half and (b) the parent's low-res logits
        shifted into the new window, the sliding-window extension the SAM-Med3D paper describes.
        Masks are merged by union; at most ``max_windows`` windows per object. For a seeded object
        (initial mask) the half the parent did not see takes the previous mask as its prompt.
        """
        half = self.roi_size // 2
        visited = {roi.key()}
        frontier = [(roi, logits, low_res)]
        windows: list[RoiGrid] = []
        pieces = []
        while frontier and len(visited) < self.max_windows:
            parent, parent_logits, parent_low = frontier.pop(0)
            for axis, side in _touched_faces(parent_logits):
                if len(visited) >= self.max_windows:
                    break
                offset = np.full(3, float(half))
                offset[axis] += side * half
                child = RoiGrid.centered_at(
                    parent.geometry.index_to_world(offset, "LPS"), size=self.roi_size, spacing=self.roi_spacing
                )
                if child.key() in visited or covered_region(child, self.image.geometry) is None:
                    continue
                visited.add(child.key())
                shared = [slice(None)] * 3
                shared[axis] = slice(half, None) if side > 0 else slice(0, half)
                shared_logits = parent_logits[tuple(shared)]
                seed = np.unravel_index(np.argmax(shared_logits), shared_logits.shape)
                if shared_logits[seed] <= 0:
                    continue
                seed_index = np.array(seed, dtype=np.float64)
                seed_index[axis] += half if side > 0 else 0
                seed_world = tuple(parent.geometry.index_to_world(seed_index, "LPS"))
                cells = side * parent_low.shape[2 + axis] // 2
                mask_input = _shift_low_res(parent_low, axis, cells)
                if previous is not None and previous.seeded and previous.region is not None and previous.region_mask is not None:
                    seen = _shift_low_res(torch.ones_like(parent_low), axis, cells) > 0
                    mask_input = torch.where(seen, mask_input, self._seed_logits(child, previous.region, previous.region_mask))
                mask_input = self._guarded(mask_input, child, oid)
                child_low, _, child_logits = self._decode(child, self._embedding(child), ((seed_world, 1),), mask_input)
                pieces.append(self._paste(child, child_low, child_logits))
                windows.append(child)
                frontier.append((child, child_logits, child_low))
        return tuple(windows), pieces


def _touched_faces(logits: np.ndarray, margin: int = 2) -> list[tuple[int, int]]:
    """(axis, side) of each window face that positive logits reach within ``margin`` voxels."""
    faces = []
    for axis in range(3):
        for side, band in ((-1, slice(0, margin)), (1, slice(-margin, None))):
            index = [slice(None)] * 3
            index[axis] = band
            if np.any(logits[tuple(index)] > 0):
                faces.append((axis, side))
    return faces


def _shift_low_res(low_res: torch.Tensor, axis: int, cells: int) -> torch.Tensor:
    """Low-res logits of a window seen from one shifted by ``cells`` along ``axis`` (0 where unseen)."""
    shifted = torch.zeros_like(low_res)
    n = low_res.shape[2 + axis]
    src = [slice(None)] * 5
    dst = [slice(None)] * 5
    if cells >= 0:
        src[2 + axis], dst[2 + axis] = slice(cells, n), slice(0, n - cells)
    else:
        src[2 + axis], dst[2 + axis] = slice(0, n + cells), slice(-cells, n)
    shifted[tuple(dst)] = low_res[tuple(src)]
    return shifted


def _union(pieces, shape) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
    """Merge (region, mask) pieces on one grid into one tight (region, mask)."""
    pieces = [(r, m) for r, m in pieces if r is not None]
    if not pieces:
        return None, None
    if len(pieces) == 1:
        return pieces[0]
    low = np.min([[s.start for s in r] for r, _ in pieces], axis=0)
    high = np.max([[s.stop for s in r] for r, _ in pieces], axis=0)
    merged = np.zeros(tuple(high - low), dtype=bool)
    for region, mask in pieces:
        merged[tuple(slice(s.start - lo, s.stop - lo) for s, lo in zip(region, low))] |= mask
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high)), merged
