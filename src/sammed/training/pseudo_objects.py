"""Automatically generated training objects for volumes with few or no labels.

A promptable model has to learn "the thing under the click, up to its edges" in any modality,
not a list of organs. Real labels cover a handful of organs in a handful of scans; pseudo-objects
cover every region of every volume, labelled or not. Two generators, each at several scales:

* :func:`supervoxels`: SLIC clusters of similar intensity that are compact in space (blobs that
  follow edges where the image has them);
* :func:`homogeneous_regions`: connected components of one intensity class (multi-Otsu) of the
  smoothed image (whole structures of one tissue, whatever their shape: a bone, a ventricle, fat).

Both run on the volume already resampled to the model's spacing, so sizes are in model voxels.
Label maps are ``uint16`` with 0 as background; each value is one object.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def normalised_intensity(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Intensities clipped to the foreground's 1st-99th percentile, scaled to [0, 1].

    SLIC's compactness trades colour distance against space; on a fixed [0, 1] range one setting
    works for CT in HU and for MR in arbitrary units alike.
    """
    values = image[foreground] if foreground.any() else image.ravel()
    low, high = np.percentile(values, [1, 99])
    scale = max(float(high - low), 1e-6)
    return np.clip((image - low) / scale, 0.0, 1.0).astype(np.float32)


def body_mask(image: np.ndarray) -> np.ndarray:
    """Voxels inside the scanned body: intensity above the background level, holes filled.

    CT air (-1000 HU) and MR background (near 0) are both the lowest few percent of a volume;
    objects in the background would teach the model to segment air.
    """
    threshold = np.percentile(image, 2) + 0.1 * (np.percentile(image, 98) - np.percentile(image, 2))
    mask = ndimage.binary_opening(image > threshold, iterations=1)
    return ndimage.binary_fill_holes(mask)


def supervoxels(image: np.ndarray, mask: np.ndarray, n_segments: int, compactness: float = 0.25) -> np.ndarray:
    """SLIC supervoxels inside ``mask``; about ``n_segments`` of them."""
    from skimage.exposure import equalize_hist
    from skimage.segmentation import slic

    # Histogram-equalised inside the body: CT soft-tissue contrasts of 20-60 HU would otherwise be
    # a few percent of the HU range and SLIC would ignore them for compactness.
    smoothed = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    smoothed = equalize_hist(smoothed, nbins=1024, mask=mask).astype(np.float32)
    labels = slic(smoothed, n_segments=n_segments, compactness=compactness, channel_axis=None,
                  mask=mask, start_label=1, enforce_connectivity=True, max_num_iter=5)
    return labels.astype(np.uint16)


def homogeneous_regions(image: np.ndarray, mask: np.ndarray, classes: int, min_voxels: int = 30,
                        max_fraction: float = 0.1) -> np.ndarray:
    """Connected regions of one intensity class of the smoothed image.

    The classes come from multi-Otsu thresholds of the body's histogram, not from quantiles:
    quantile bands put a small bright structure (a bone, a contrast-filled vessel) in one band
    with the noise tail of the tissue around it, and the two merge. Regions smaller than
    ``min_voxels`` (noise specks) or larger than ``max_fraction`` of the body (a whole tissue,
    no object to click) are dropped.
    """
    from skimage.filters import threshold_multiotsu

    smoothed = ndimage.gaussian_filter(normalised_intensity(image, mask), 1.0)
    if not mask.any():
        return np.zeros(image.shape, dtype=np.uint16)
    thresholds = threshold_multiotsu(smoothed[mask], classes=classes, nbins=128)
    band = np.digitize(smoothed, thresholds)
    out = np.zeros(image.shape, dtype=np.uint16)
    next_value = 1
    body = int(mask.sum())
    for value in range(classes):
        components, count = ndimage.label((band == value) & mask)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())
        keep = np.flatnonzero((sizes >= min_voxels) & (sizes <= max_fraction * body))
        keep = keep[keep != 0][: max(65535 - next_value, 0)]
        lookup = np.zeros(count + 1, dtype=np.uint16)
        lookup[keep] = np.arange(next_value, next_value + len(keep), dtype=np.uint16)
        out = np.where(lookup[components] > 0, lookup[components], out)
        next_value += len(keep)
    return out


def pseudo_object_maps(image: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The label maps written for one volume: two supervoxel scales and two class counts.

    The scales are chosen from the body's size, so a head and an abdomen both get objects from a
    few millilitres to organ size (at 3 mm a voxel is 27 µl).
    """
    mask = body_mask(image)
    body = max(int(mask.sum()), 1)
    rng = np.random.default_rng(seed)
    fine = max(int(body / rng.uniform(150, 400)), 8)  # objects of roughly 150-400 voxels (4-11 ml)
    coarse = max(int(body / rng.uniform(1500, 5000)), 4)  # roughly 40-135 ml
    return {
        "svfine": supervoxels(image, mask, fine),
        "svcoarse": supervoxels(image, mask, coarse),
        "otsu3": homogeneous_regions(image, mask, 3),
        "otsu5": homogeneous_regions(image, mask, 5),
    }
