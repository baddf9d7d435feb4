"""Assemble the training, validation and held-out folders of the bundled ``sammed-demo-3d`` model.

Only data that may be redistributed is used (licences in the model card). Sources, each optional
except ``shared/data`` (a missing package is skipped with a message):

* ``shared/data``: TotalSegmentator example CT with its model-generated label map, Spine Generic
  T2w with the manual cord mask (the T1w goes to validation, the T2*w is held out); the dcmqi
  3-slice CT with hand-drawn liver, spine and heart (validation);
* Debian ``mricron-data``: Colin27 (``ch2``) T1 with its brain mask and the AAL and Brodmann atlases;
* Debian ``insighttoolkit5-examples``: a T1 head MRI with its k-means tissue classes;
* Debian ``invesalius-examples``: a head CT with bone and soft-tissue masks (validation);
* nilearn's bundled MNI152 2009 template with grey/white-matter and brain masks (``--nilearn-data``);
* unlabelled: TotalSegmentator's bundled head-CT atlas (``--totalseg-data``), dipy's anisotropic
  test volume (``--dipy-data``);
* synthetic volumes of random ellipsoids (:func:`synthetic_case`).

Every real volume also gets automatically generated pseudo-objects
(:mod:`sammed.training.pseudo_objects`), written as extra cases ``<case>__<kind>`` on the model's
3 mm grid; the trainer's ``--pseudo-fraction`` sets how often they are drawn.

Output: nnU-Net raw folders (``imagesTr``/``labelsTr`` + ``dataset.json``): ``OUT/train`` for
``sammed train``; ``OUT/val_*`` (choosing checkpoints and settings) and ``OUT/heldout_*`` (reported
once, for the shipped model), one folder per volume with its own label names, for
:mod:`sammed.training.demo_eval`. No volume is in more than one split.
"""

from __future__ import annotations

import argparse
import json
import plistlib
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from sammed.geometry import RoiGrid, canonical_grid
from sammed.inference.roi import sample_window
from sammed.io import read_image
from sammed.io.image import Geometry, Image
from sammed.io.readers import to_sitk
from sammed.io.writers import write_image
from sammed.training.pseudo_objects import pseudo_object_maps

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
ITK_EXAMPLES = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
INVESALIUS_EXAMPLE = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
NILEARN_TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
NILEARN_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
NILEARN_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
TOTALSEG_HEAD_CT = "ct_brain_atlas_1mm.nii.gz"
DIPY_VOLUME = "aniso_vox.nii.gz"
PSEUDO_SPACING_MM = 3.0
VALIDATION_SYNTHETIC_SEEDS = (1000, 1001)


def _write_case(root: Path, case_id: str, image: Image, labels: np.ndarray) -> None:
    images, label_dir = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    write_image(image, images / f"{case_id}_0000.nii.gz")
    dtype = np.uint8 if labels.max() < 256 else np.uint16
    write_image(image.with_array(labels.astype(dtype)), label_dir / f"{case_id}.nii.gz")


def _write_pseudo_cases(root: Path, case_id: str, image: Image, seed: int) -> list[str]:
    """The volume on the model's grid plus one case per pseudo-object map (see module doc)."""
    grid = canonical_grid(image.geometry, PSEUDO_SPACING_MM)
    resampled = sample_window(to_sitk(image), RoiGrid(grid)).astype(np.float32)
    on_grid = Image(resampled, grid)
    written = []
    for kind, labels in pseudo_object_maps(resampled, seed).items():
        if labels.max() == 0:
            continue
        _write_case(root, f"{case_id}__{kind}", on_grid, labels)
        written.append(f"{case_id}__{kind}")
    return written


def read_invesalius_project(path: Path) -> tuple[Image, dict[str, np.ndarray]]:
    """An InVesalius ``.inv3`` project (gzip tar of plists and raw arrays): the CT and its masks.

    The volume is ``matrix.dat`` (int16, ``[slice, row, column]``); each mask is stored with one
    extra leading plane, row and column that InVesalius uses for bookkeeping, and 255 inside.
    """
    with tempfile.TemporaryDirectory() as folder, tarfile.open(path, "r:gz") as archive:
        archive.extractall(folder, filter="data")
        project = next(Path(folder).rglob("main.plist")).parent
        main = plistlib.loads((project / "main.plist").read_bytes())
        shape = tuple(main["matrix"]["shape"])
        matrix = np.fromfile(project / main["matrix"]["filename"], dtype=main["matrix"]["dtype"]).reshape(shape)
        masks = {}
        for name in main.get("masks", {}).values():
            meta = plistlib.loads((project / name).read_bytes())
            raw = np.fromfile(project / name.replace(".plist", ".dat"), dtype=np.uint8)
            mask = raw.reshape(tuple(n + 1 for n in shape))[1:, 1:, 1:] > 127
            masks[str(meta.get("name", name))] = np.ascontiguousarray(mask.T)
    spacing = tuple(float(v) for v in main["spacing"])
    geometry = Geometry(tuple(int(n) for n in shape[::-1]), spacing, (0.0, 0.0, 0.0), np.eye(3))
    return Image(np.ascontiguousarray(matrix.T).astype(np.float32), geometry), masks


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


def _relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    values = np.unique(labels)
    values = values[values != 0]
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.uint16)
    lookup[values.astype(np.int64)] = np.arange(1, len(values) + 1, dtype=np.uint16)
    return lookup[labels.astype(np.int64)]


def _note(message: str) -> None:
    print(f"demo_data: {message}")


def build_demo_dataset(
    out: Path,
    shared_data: Path,
    nilearn_data: Path | None = None,
    mricron: Path = MRICRON_TEMPLATES,
    synthetic: int = 4,
    with_aal: bool = True,
    itk_examples: Path = ITK_EXAMPLES,
    invesalius: Path = INVESALIUS_EXAMPLE,
    totalseg_data: Path | None = None,
    dipy_data: Path | None = None,
    pseudo_objects: bool = True,
) -> list[str]:
    """Write the three splits under ``out``; returns the case ids written (``split/case``)."""
    written: list[str] = []
    ts = shared_data / "totalsegmentator_examples"
    spine = shared_data / "spinegeneric_sub-unf01"
    train_root = out / "train"
    pseudo_sources: list[tuple[str, Image]] = []

    def train_case(case_id: str, image: Image, labels: np.ndarray | None, pseudo: bool = True) -> None:
        if labels is not None:
            _write_case(train_root, case_id, image, labels)
            written.append(f"train/{case_id}")
        if pseudo and pseudo_objects:
            pseudo_sources.append((case_id, image))

    ct = read_image(ts / "example_ct.nii.gz")
    train_case("tsct", ct, read_image(ts / "example_seg_fast_force_split.nii.gz").array)
    t2w = read_image(spine / "sub-unf01_T2w.nii.gz")
    train_case("spinet2w", t2w, read_image(spine / "sub-unf01_T2w_seg-manual.nii.gz").array > 0.5)
    if (mricron / "ch2.nii.gz").is_file():
        ch2 = read_image(mricron / "ch2.nii.gz")
        train_case("ch2brain", ch2, read_image(mricron / "ch2bet.nii.gz").array > 0)
        if with_aal:
            train_case("ch2aal", ch2, read_image(mricron / "aal.nii.gz").array, pseudo=False)
            train_case("ch2brodmann", ch2, _relabel_consecutive(read_image(mricron / "brodmann.nii.gz").array), pseudo=False)
    else:
        _note(f"no {mricron}/ch2.nii.gz (Debian package mricron-data): Colin27 skipped")
    if (itk_examples / "KmeansTest_T1UCharRaw.nii.gz").is_file():
        t1 = read_image(itk_examples / "KmeansTest_T1UCharRaw.nii.gz")
        tissue = read_image(itk_examples / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz").array
        train_case("itkt1", t1, tissue)
    else:
        _note(f"no ITK example T1 in {itk_examples} (Debian package insighttoolkit5-examples): skipped")
    if nilearn_data is not None and (nilearn_data / NILEARN_TEMPLATE).is_file():
        mni = read_image(nilearn_data / NILEARN_TEMPLATE)
        gm = read_image(nilearn_data / NILEARN_GM).array.astype(np.float32)
        wm = read_image(nilearn_data / NILEARN_WM).array.astype(np.float32)
        scale = 255.0 if max(gm.max(), wm.max()) > 1.5 else 1.0
        tissue = np.zeros(gm.shape, dtype=np.uint8)
        tissue[wm / scale > 0.5] = 1
        tissue[gm / scale > 0.5] = 2
        train_case("mnitissue", mni, tissue)
        train_case("mnibrain", mni, (gm + wm) / scale > 0.5, pseudo=False)
    if totalseg_data is not None and (totalseg_data / TOTALSEG_HEAD_CT).is_file():
        train_case("tsheadct", read_image(totalseg_data / TOTALSEG_HEAD_CT), None)
    if dipy_data is not None and (dipy_data / DIPY_VOLUME).is_file():
        train_case("dipyaniso", read_image(dipy_data / DIPY_VOLUME), None)
    for index in range(synthetic):
        image, labels = synthetic_case(seed=index)
        train_case(f"synth{index:02d}", image, labels, pseudo=False)
    for number, (case_id, image) in enumerate(pseudo_sources):
        written += [f"train/{c}" for c in _write_pseudo_cases(train_root, case_id, image, seed=number)]

    # Validation (checkpoint and setting choice) and held-out (reported once): never trained on.
    class_map = json.loads((ts / "class_map_total_and_total_mr.json").read_text())
    splits: list[tuple[str, str, Image, np.ndarray, dict, str]] = [
        ("val_spine", "spinet1w", read_image(spine / "sub-unf01_T1w.nii.gz"),
         read_image(spine / "sub-unf01_T1w_seg-manual.nii.gz").array > 0.5, {"1": "spinal_cord"}, "MRI"),
    ]
    ct3 = shared_data / "dcmqi_ct3slice"
    if (ct3 / "ct-3slice").is_dir():
        slab = read_image(ct3 / "ct-3slice")
        organs = np.zeros(slab.shape, dtype=np.uint8)
        for value, name in ((3, "heart"), (1, "liver"), (2, "spine")):
            organs[read_image(ct3 / f"{name}_seg.nrrd").array > 0] = value
        splits.append(("val_ct3slice", "dcmqict", slab, organs, {"1": "liver", "2": "spine", "3": "heart"}, "CT"))
    if invesalius.is_file():
        head_ct, masks = read_invesalius_project(invesalius)
        labels = np.zeros(head_ct.shape, dtype=np.uint8)
        names = {}
        for value, mask in enumerate(sorted(masks.values(), key=lambda m: -int(m.sum())), start=1):
            labels[mask] = value  # larger masks first, so the smaller (bone) stays on top
            names[str(value)] = "soft_tissue_and_bone" if value == 1 else "bone"
        splits.append(("val_headct", "invesalius", head_ct, labels, names, "CT"))
    else:
        _note(f"no {invesalius} (Debian package invesalius-examples): validation CT skipped")
    for seed in VALIDATION_SYNTHETIC_SEEDS:
        image, labels = synthetic_case(seed=seed)
        splits.append((f"val_synth{seed}", f"synth{seed}", image, labels, {}, "CT" if seed % 2 == 0 else "MRI"))
    splits += [
        ("heldout_ct", "tsctdicom", read_image(ts / "example_ct_dicom"), read_image(ts / "example_seg_dicom.nii.gz").array,
         class_map.get("total", {}), "CT"),
        ("heldout_mr", "tsmr", read_image(ts / "example_mr_sm.nii.gz"), read_image(ts / "example_seg_mr.nii.gz").array,
         class_map.get("total_mr", {}), "MRI"),
        ("heldout_spine", "spinet2star", read_image(spine / "sub-unf01_T2star.nii.gz"),
         read_image(spine / "sub-unf01_T2star_seg-manual.nii.gz").array > 0.5, {"1": "spinal_cord"}, "MRI"),
    ]
    for folder, case_id, image, labels, names, modality in splits:
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
    parser = argparse.ArgumentParser(description="Build the sammed-demo-3d train/validation/held-out folders (nnU-Net layout).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--shared-data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--nilearn-data", type=Path, help="nilearn/datasets/data (from the nilearn wheel)")
    parser.add_argument("--totalseg-data", type=Path, help="totalsegmentator/resources (from the TotalSegmentator wheel)")
    parser.add_argument("--dipy-data", type=Path, help="dipy/data/files (from the dipy wheel)")
    parser.add_argument("--mricron", type=Path, default=MRICRON_TEMPLATES)
    parser.add_argument("--itk-examples", type=Path, default=ITK_EXAMPLES)
    parser.add_argument("--invesalius", type=Path, default=INVESALIUS_EXAMPLE)
    parser.add_argument("--synthetic", type=int, default=4, help="synthetic ellipsoid volumes (default 4)")
    parser.add_argument("--without-atlases", action="store_true", help="leave out the AAL and Brodmann parcels of ch2")
    parser.add_argument("--without-pseudo-objects", action="store_true", help="real labels only")
    args = parser.parse_args(argv)
    cases = build_demo_dataset(args.out, args.shared_data, args.nilearn_data, args.mricron, args.synthetic,
                               not args.without_atlases, args.itk_examples, args.invesalius, args.totalseg_data,
                               args.dipy_data, not args.without_pseudo_objects)
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
