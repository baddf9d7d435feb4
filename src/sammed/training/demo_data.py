"""Assemble the training and held-out folders of the bundled ``sammed-demo-3d`` model.

Only data that may be redistributed is used (licences in the model card):

* ``shared/data`` (the repository's shared test data): TotalSegmentator example CT with its
  model-generated label map, Spine Generic T1w/T2w with manual cord masks;
* Debian's ``mricron-data``: the Colin27 (``ch2``) brain MRI with the AAL atlas and a brain mask;
* optionally (``--nilearn-data``) nilearn's bundled MNI152 2009 template with grey/white-matter
  probability maps; the shipped weights do not use it (nilearn lists its licence as unknown);
* synthetic volumes of random ellipsoids (:func:`synthetic_case`).

Held out (never trained on): the TotalSegmentator DICOM CT, the TotalSegmentator MR and the Spine
Generic T2*w volume. Output: nnU-Net raw folders (``imagesTr``/``labelsTr`` + ``dataset.json``):
``OUT/train`` for ``sammed train`` and one folder per held-out volume (``OUT/heldout_ct``,
``OUT/heldout_mr``, ``OUT/heldout_spine``, each with its own label names) for ``sammed eval``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from sammed.io import read_image
from sammed.io.image import Geometry, Image
from sammed.io.writers import write_image

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
NILEARN_TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
NILEARN_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
NILEARN_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"


def _write_case(root: Path, case_id: str, image: Image, labels: np.ndarray) -> None:
    images, label_dir = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    write_image(image, images / f"{case_id}_0000.nii.gz")
    write_image(image.with_array(labels.astype(np.uint8)), label_dir / f"{case_id}.nii.gz")


def synthetic_case(seed: int, size: int = 72, spacing: float = 3.0) -> tuple[Image, np.ndarray]:
    """Random ellipsoids with their own mean intensity on a smooth, noisy background.

    Half the cases use CT-like values (air around a body), half MR-like positive values, so both
    normalisation regimes of the z-score over voxels > 0 are seen.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3).astype(np.float32)
    ct_like = seed % 2 == 0
    background = ndimage.gaussian_filter(rng.normal(0, 1, (size,) * 3), 6) * 400
    image = (40.0 if ct_like else 300.0) + background
    labels = np.zeros((size,) * 3, dtype=np.uint8)
    for label in range(1, int(rng.integers(3, 7)) + 1):
        centre = rng.uniform(12, size - 12, 3)
        radii = rng.uniform(3, 16, 3)
        rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        offsets = np.tensordot(rotation.T, grid - centre[:, None, None, None], axes=1)
        inside = (((offsets / radii[:, None, None, None]) ** 2).sum(axis=0)) <= 1.0
        contrast = rng.choice([-1, 1]) * rng.uniform(80, 500)
        image = np.where(inside, image + contrast, image)
        labels[inside] = label
    image += rng.normal(0, rng.uniform(5, 60), image.shape)
    if ct_like:  # air outside a ball-shaped "body"
        body = ((grid - size / 2) ** 2).sum(axis=0) <= (0.48 * size) ** 2
        image = np.where(body, image, -1000.0)
        labels[~body] = 0
    geometry = Geometry((size,) * 3, (spacing,) * 3, (0.0, 0.0, 0.0), np.eye(3))
    return Image(image.astype(np.float32), geometry), labels


def _binary_union(*arrays: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce([a > 0 for a in arrays])


def build_demo_dataset(
    out: Path,
    shared_data: Path,
    nilearn_data: Path | None,
    mricron: Path = MRICRON_TEMPLATES,
    synthetic: int = 16,
    with_aal: bool = False,
) -> list[str]:
    """Write both splits under ``out``; returns the case ids written.

    The 116 AAL parcels are off by default: they are atlas regions, mostly without an image
    edge between neighbours, and would be half of all (case, class) items of a short run.
    """
    written = []
    ts = shared_data / "totalsegmentator_examples"
    spine = shared_data / "spinegeneric_sub-unf01"

    train_root = out / "train"
    ct = read_image(ts / "example_ct.nii.gz")
    _write_case(train_root, "tsct", ct, read_image(ts / "example_seg_fast_force_split.nii.gz").array)
    written.append("tsct")
    for contrast in ("T1w", "T2w"):
        image = read_image(spine / f"sub-unf01_{contrast}.nii.gz")
        cord = read_image(spine / f"sub-unf01_{contrast}_seg-manual.nii.gz").array > 0.5
        _write_case(train_root, f"spine{contrast.lower()}", image, cord)
        written.append(f"spine{contrast.lower()}")
    if (mricron / "ch2.nii.gz").is_file():
        ch2 = read_image(mricron / "ch2.nii.gz")
        _write_case(train_root, "ch2brain", ch2, read_image(mricron / "ch2bet.nii.gz").array > 0)
        written.append("ch2brain")
        if with_aal:
            _write_case(train_root, "ch2aal", ch2, read_image(mricron / "aal.nii.gz").array)
            written.append("ch2aal")
    if nilearn_data is not None and (nilearn_data / NILEARN_TEMPLATE).is_file():
        mni = read_image(nilearn_data / NILEARN_TEMPLATE)
        gm = read_image(nilearn_data / NILEARN_GM).array.astype(np.float32)
        wm = read_image(nilearn_data / NILEARN_WM).array.astype(np.float32)
        scale = 255.0 if max(gm.max(), wm.max()) > 1.5 else 1.0
        tissue = np.zeros(gm.shape, dtype=np.uint8)
        tissue[wm / scale > 0.5] = 1
        tissue[gm / scale > 0.5] = 2
        _write_case(train_root, "mnitissue", mni, tissue)
        _write_case(train_root, "mnibrain", mni, (gm + wm) / scale > 0.5)
        written += ["mnitissue", "mnibrain"]
    for index in range(synthetic):
        image, labels = synthetic_case(seed=index)
        _write_case(train_root, f"synth{index:02d}", image, labels)
        written.append(f"synth{index:02d}")

    # Held-out volumes: never in the training folder.
    class_map = json.loads((ts / "class_map_total_and_total_mr.json").read_text())
    held_out = [
        ("heldout_ct", "tsctdicom", read_image(ts / "example_ct_dicom"), read_image(ts / "example_seg_dicom.nii.gz").array,
         class_map.get("total", {}), "CT"),
        ("heldout_mr", "tsmr", read_image(ts / "example_mr_sm.nii.gz"), read_image(ts / "example_seg_mr.nii.gz").array,
         class_map.get("total_mr", {}), "MRI"),
        ("heldout_spine", "spinet2star", read_image(spine / "sub-unf01_T2star.nii.gz"),
         read_image(spine / "sub-unf01_T2star_seg-manual.nii.gz").array > 0.5, {"1": "spinal_cord"}, "MRI"),
    ]
    for folder, case_id, image, labels, names, modality in held_out:
        _write_case(out / folder, case_id, image, labels)
        present = {int(v) for v in np.unique(labels) if v}
        _write_dataset_json(out / folder, {v: names.get(str(v), f"class_{v}") for v in sorted(present)}, modality)
        written.append(f"{folder}/{case_id}")
    return written


def _write_dataset_json(root: Path, names: dict[int, str], modality: str) -> None:
    """nnU-Net v2 ``dataset.json`` (label name -> value), which ``sammed eval`` reads."""
    labels = {"background": 0, **{name: value for value, name in names.items()}}
    meta = {"channel_names": {"0": modality}, "labels": labels, "file_ending": ".nii.gz",
            "numTraining": len(list((root / "labelsTr").glob("*.nii.gz")))}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the sammed-demo-3d training/held-out folders (nnU-Net layout).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--shared-data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--nilearn-data", type=Path, help="nilearn/datasets/data (from the nilearn wheel)")
    parser.add_argument("--mricron", type=Path, default=MRICRON_TEMPLATES)
    parser.add_argument("--synthetic", type=int, default=16, help="synthetic ellipsoid volumes (default 16)")
    parser.add_argument("--with-aal", action="store_true", help="also train on the 116 AAL atlas parcels of ch2")
    args = parser.parse_args(argv)
    cases = build_demo_dataset(args.out, args.shared_data, args.nilearn_data, args.mricron, args.synthetic, args.with_aal)
    print(f"wrote {len(cases)} cases to {args.out}: {', '.join(cases)}")


if __name__ == "__main__":
    main()
