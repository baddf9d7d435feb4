"""The interface of a promptable 3D model: what ``Session``, the server and evaluation may use.

Two implementations: :class:`~sammed.models.sam3d.model.SamMed3D` (PyTorch) and
:class:`~sammed.inference.onnx_backend.OnnxSamMed3D` (onnxruntime). Anything else that
provides these members (a remote model, a test double) works with :class:`Session` as well;
nothing outside the model may reach into its sub-modules.

Frames: a *window* is a cube of ``window_voxels`` voxels per side at ``window_spacing_mm``,
axes (A0, A1, A2) in canonical RAS order (see :class:`sammed.inference.roi.RoiGrid`). Point
coordinates and box corners are continuous window voxel indices in that order.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class PromptableModel3D(Protocol):
    """Encode a window once; decode prompts with the previous logits many times."""

    @property
    def window_voxels(self) -> int:
        """Side S of the cubic model window, in voxels (128 for SAM-Med3D-turbo)."""
        ...

    @property
    def window_spacing_mm(self) -> float:
        """Isotropic voxel size of the window (1.5 mm for SAM-Med3D-turbo)."""
        ...

    @property
    def low_res_size(self) -> int:
        """Side of the low-res logits and of the mask prompt (S / 4)."""
        ...

    @property
    def supports_boxes(self) -> bool:
        """Whether ``decode`` takes boxes (checkpoints with box corner embeddings)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where inputs must live."""
        ...

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        """(1, 1, S, S, S) z-scored window -> image embedding (opaque to callers)."""
        ...

    def decode(
        self,
        embedding: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (1, N, 3) with labels (1, N) (1 positive, 0 negative), the previous low-res
        logits (1, 1, s, s, s) or None, boxes (1, 6) as (min corner, max corner) ->
        (low-res logits (1, 1, s, s, s), predicted IoU (1, 1))."""
        ...

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> (1, 1, S, S, S) window logits."""
        ...
