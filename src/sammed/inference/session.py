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
from sammed.inference.precision import autocast, resolve_precision
from sammed.inference.roi import RoiGrid, paste_window_mask, sample_window, zscore_foreground
from sammed.io.image import Image
from sammed.io.readers import to_sitk
from sammed.io.validation import validate_volume
from sammed.io.writers import write_mask
from sammed.prompts import Box, Point

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

    @property
    def is_empty(self) -> bool:
        return not self.clicks and self.box_corners is None


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
    """Stateful promptable segmentation of one 3D image with a SAM-Med3D model.

    Prompts are points or boxes in voxel ``(i, j, k)`` of the file or world mm (RAS or LPS).
    Object ids start at 1; the label map writes later objects over earlier ones.
    """

    def __init__(
        self,
        model: nn.Module,
        image: Image,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> None:
        validate_volume(image)
        self.image = image
        if device is None:
            parameter = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
            device = parameter.device if parameter is not None else "cpu"
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval() if isinstance(model, nn.Module) else model
        spec = getattr(model, "spec", None)
        pre = spec.preprocessing if spec is not None else None
        self.roi_size = model.config.img_size
        self.roi_spacing = pre.target_spacing_mm[0] if pre is not None else 1.5
        self._source: sitk.Image = to_sitk(image)
        self._objects: dict[int, ObjectState] = {}
        self._undo: list[_Action] = []
        self._redo: list[_Action] = []
        self._embeddings: OrderedDict[tuple, tuple[RoiGrid, torch.Tensor]] = OrderedDict()
        self.active_object = 1
        self.timings = SessionTimings()
        self._image_pe: torch.Tensor | None = None

    # ------------------------------------------------------------------ objects
    @property
    def object_ids(self) -> list[int]:
        return sorted(i for i, s in self._objects.items() if not s.is_empty)

    def new_object(self) -> int:
        """Start a new object; later prompts go to it unless another id is given."""
        self.active_object = max([0, *self._objects, self.active_object]) + 1
        return self.active_object

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
        space: str = "voxel",
        convention: str = "RAS",
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
        space: str = "voxel",
        convention: str = "RAS",
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
        if not self.model.prompt_encoder.supports_boxes:
            center = tuple(corners.mean(axis=0))
            candidate = replace(candidate, clicks=before.clicks + ((center, 1),))
        return self._apply(oid, before, candidate)

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
        full = np.zeros(self.image.shape, dtype=bool)
        if state.region is not None:
            full[state.region] = state.region_mask
        return full

    def label_map(self) -> np.ndarray:
        """All objects as labels (object id) on the original grid; later ids overwrite earlier."""
        ids = self.object_ids
        dtype = np.uint8 if not ids or max(ids) <= 255 else np.uint16
        labels = np.zeros(self.image.shape, dtype=dtype)
        for oid in ids:
            state = self._objects[oid]
            if state.region is not None:
                labels[state.region][state.region_mask] = oid
        return labels

    def save(self, path: str | Path, object_id: int | None = None) -> Path:
        """Write the label map (or one object's mask) atomically with the input's geometry."""
        array = self.label_map() if object_id is None else self.mask(object_id).astype(np.uint8)
        return write_mask(array, self.image, path)

    # ------------------------------------------------------------------ model
    def _apply(self, oid: int, before: ObjectState, candidate: ObjectState) -> np.ndarray:
        after = self._predict(candidate, previous=before)
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

    def _dense_pe(self) -> torch.Tensor:
        """The prompt-independent dense positional encoding, computed once per session."""
        if self._image_pe is None:
            with torch.inference_mode():
                self._image_pe = self.model.prompt_encoder.get_dense_pe()
        return self._image_pe

    def _embedding(self, roi: RoiGrid) -> torch.Tensor:
        key = roi.key()
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key][1]
        window = zscore_foreground(sample_window(self._source, roi))
        with torch.inference_mode(), autocast(self.precision, self.device):
            start = time.perf_counter()
            embedding = self.model.image_encoder(window[None, None].to(self.device))
            self.timings.encoder += time.perf_counter() - start
            self.timings.encoder_calls += 1
        self._embeddings[key] = (roi, embedding)
        while len(self._embeddings) > _EMBEDDING_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        return embedding

    def _predict(self, state: ObjectState, previous: ObjectState) -> ObjectState:
        self.timings = SessionTimings()
        start = time.perf_counter()
        roi = self._plan_roi(state, previous)
        embedding = self._embedding(roi)
        same_window = previous.roi is not None and previous.roi.key() == roi.key()
        low_res_size = self.model.low_res_size
        mask_input = previous.low_res if same_window and previous.low_res is not None else torch.zeros(
            1, 1, low_res_size, low_res_size, low_res_size, device=self.device
        )
        coords = labels = None
        if state.clicks:
            index = roi.to_index(np.array([c for c, _ in state.clicks]))
            coords = torch.as_tensor(index, dtype=torch.float32, device=self.device)[None]
            labels = torch.as_tensor([lbl for _, lbl in state.clicks], dtype=torch.float32, device=self.device)[None]
        boxes = None
        if state.box_corners is not None and self.model.prompt_encoder.supports_boxes:
            box_index = roi.to_index(state.box_corners)
            lo, hi = box_index.min(axis=0), box_index.max(axis=0)
            boxes = torch.as_tensor(np.concatenate([lo, hi]), dtype=torch.float32, device=self.device)[None]
        with torch.inference_mode(), autocast(self.precision, self.device):
            decode_start = time.perf_counter()
            low_res, iou = self.model.predict_low_res(
                embedding, coords, labels, mask_input, boxes=boxes, image_pe=self._dense_pe()
            )
            low_res = low_res.float()  # fed back as the next mask prompt, kept in float32
            logits = self.model.upscale_logits(low_res)[0, 0].float().cpu().numpy()
            self.timings.decoder = time.perf_counter() - decode_start
        region, region_mask = paste_window_mask(logits, roi, self.image.geometry)
        self.timings.total = time.perf_counter() - start
        return replace(state, roi=roi, low_res=low_res, region=region, region_mask=region_mask, iou=float(iou.flatten()[0]))
