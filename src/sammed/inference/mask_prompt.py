"""Masks as the model's dense prompt: a mask on the image grid -> low-res logits in a model window.

SAM-Med3D's prompt encoder takes a dense mask input of ``low_res_size``^3 cells; the official
interactive loop feeds back the previous low-resolution *logits* through it. An initial mask,
a lasso or other objects' voxels enter the model the same way: the fraction of each low-res cell
the mask covers is turned into logits of +/-``MASK_PROMPT_LOGIT``.

Why +/-10, measured (``scripts/mask_prompt_scale_study.py``: ``sammed-demo-3d`` on
``sammed.data.SAMPLE_CT`` with TotalSegmentator's labels of that scan; 5 organs x {complete seed,
seed missing its upper half}, initial mask + one click, mean Dice against the reference):
k = 0 (no mask prompt, the click alone) 0.358, k = 1 0.399, k = 5 0.449, k = 10 0.453,
k = 20 0.454. The gain saturates from about 5: the model's own low-res logits after a click lie
around -8..+6 (median +1 inside, -4 outside), so +/-1 reads as an unsure mask, while anything
beyond the model's own range reads as certain, which a mask the user hands in is. 10 sits on the
plateau with a margin; 20 adds nothing (+0.001).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from sammed.geometry import RoiGrid, resample_onto
from sammed.io.image import Geometry, Image
from sammed.io.readers import to_sitk

MASK_PROMPT_LOGIT = 10.0


def cropped_mask_image(region: tuple[slice, ...], region_mask: np.ndarray, geometry: Geometry) -> sitk.Image:
    """The tight (region, mask) of an object as a small SimpleITK image at its place in the world."""
    start = np.array([s.start for s in region], dtype=np.float64)
    crop = Geometry(region_mask.shape, geometry.spacing, tuple(geometry.index_to_world(start, "LPS")), geometry.direction)
    return to_sitk(Image(np.ascontiguousarray(region_mask, dtype=np.uint8), crop))


def window_fraction(mask: sitk.Image, roi: RoiGrid, low_res_size: int) -> np.ndarray:
    """Fraction (0..1) of each low-res cell of ``roi`` that ``mask`` covers, [A0, A1, A2].

    The mask is linearly resampled onto the full window grid and averaged over the window
    voxels of each cell, which is where the model's ``upscale`` puts that cell.
    """
    window = resample_onto(mask, roi.geometry, "linear", outside=0.0, pixel_id=sitk.sitkFloat32)
    factor = roi.size // low_res_size
    tensor = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None, None]
    return F.avg_pool3d(tensor, factor)[0, 0].numpy() if factor > 1 else tensor[0, 0].numpy()


def logits_from_fraction(fraction: np.ndarray, scale: float = MASK_PROMPT_LOGIT) -> torch.Tensor:
    """Cells at least half covered -> +scale, others -> -scale, as (1, 1, s, s, s) float32."""
    logits = np.where(fraction >= 0.5, scale, -scale).astype(np.float32)
    return torch.from_numpy(logits)[None, None]


def cells_touched(world_lps: np.ndarray, roi: RoiGrid, low_res_size: int) -> np.ndarray:
    """Bool (s, s, s): the low-res cells of ``roi`` holding at least one of the world points.

    Used for thin prompts (a lasso on one slice), which a coverage fraction would dilute.
    """
    touched = np.zeros((low_res_size,) * 3, dtype=bool)
    if len(world_lps) == 0:
        return touched
    factor = roi.size / low_res_size
    cells = np.floor((roi.to_index(np.asarray(world_lps, dtype=np.float64)) + 0.5) / factor).astype(int)
    inside = np.all((cells >= 0) & (cells < low_res_size), axis=1)
    touched[tuple(cells[inside].T)] = True
    return touched
