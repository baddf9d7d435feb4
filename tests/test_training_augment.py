"""Training signal for the demo model: pseudo-objects, scale/orientation/intensity augmentation,
balanced sampling, and the extra data readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed.io import read_image
from sammed.io.writers import write_image
from sammed.training import TrainConfig, TrainingConfigError, WindowDataset, build_cache
from sammed.training.dataset import (
    Augmentations,
    Item,
    TrainingDataError,
    crop_inside,
    crop_with_padding,
    item_weights,
    list_items,
    rescale_window,
)
from sammed.training.demo_data import INVESALIUS_EXAMPLE, read_invesalius_project
from sammed.training.pseudo_objects import body_mask, homogeneous_regions, pseudo_object_maps, supervoxels

LIVER = 5


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def _phantom(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Air around a body of soft tissue holding three balls of other intensities (CT-like, noisy)."""
    grid = np.indices((size,) * 3).astype(np.float32)
    rng = np.random.default_rng(0)
    image = np.full((size,) * 3, -1000.0, dtype=np.float32)
    body = ((grid - size / 2) ** 2).sum(0) <= (0.45 * size) ** 2
    image[body] = 40.0
    labels = np.zeros((size,) * 3, dtype=np.uint8)
    for value, (centre, radius, hu) in enumerate([((16, 16, 24), 6, 300.0), ((32, 30, 24), 7, -80.0),
                                                  ((24, 24, 36), 5, 700.0)], start=1):
        ball = ((grid - np.array(centre, dtype=np.float32)[:, None, None, None]) ** 2).sum(0) <= radius ** 2
        image[ball], labels[ball] = hu, value
    return image + rng.normal(0, 10, image.shape).astype(np.float32), labels


def test_homogeneous_regions_recover_each_ball_of_its_own_intensity():
    image, labels = _phantom()
    mask = body_mask(image)
    assert _dice(mask, image > -500) > 0.95
    regions = homogeneous_regions(image, mask, classes=4)
    assert regions.max() > 0 and not regions[~mask].any()
    for value in (1, 2, 3):
        target = labels == value
        best = max([_dice(target, regions == h) for h in np.unique(regions[target]) if h] or [0.0])
        assert best > 0.8, (value, best)


def test_supervoxels_stay_in_the_body_and_follow_the_requested_count():
    image, _ = _phantom(40)
    mask = body_mask(image)
    few, many = supervoxels(image, mask, 8), supervoxels(image, mask, 64)
    assert not few[~mask].any() and not many[~mask].any()
    assert 2 <= len(np.unique(few)) - 1 < len(np.unique(many)) - 1


def test_pseudo_object_maps_name_four_maps_on_the_same_grid():
    image, _ = _phantom(40)
    maps = pseudo_object_maps(image, seed=0)
    assert set(maps) == {"svfine", "svcoarse", "otsu3", "otsu5"}
    assert all(m.shape == image.shape and m.dtype == np.uint16 and m.max() > 0 for m in maps.values())


def test_rescale_window_keeps_label_values_and_resizes():
    labels = np.zeros((40, 40, 40), dtype=np.uint16)
    labels[10:30, 10:30, 10:30] = 7
    image = labels.astype(np.float32) * 10
    new_image, new_labels = rescale_window(image, labels, 64)
    assert new_image.shape == new_labels.shape == (64, 64, 64)
    assert set(np.unique(new_labels)) == {0, 7}
    assert abs((new_labels == 7).mean() - (labels == 7).mean()) < 0.01  # same fraction of the window


def test_scale_range_draws_crop_sizes_in_range_and_one_is_identity():
    rng = np.random.default_rng(0)
    sizes = {Augmentations((0.5, 2.0)).crop_size(64, rng) for _ in range(200)}
    assert min(sizes) >= 32 and max(sizes) <= 128 and len(sizes) > 20
    assert Augmentations().crop_size(64, rng) == 64


def test_contrast_remap_reorders_tissues_keeps_air_dark_and_is_off_by_default():
    image, labels = _phantom()
    assert Augmentations().remap_contrast(image, np.random.default_rng(0)) is image  # probability 0
    augment = Augmentations(remap_probability=1.0)
    air, tissue = (labels == 0) & (image < -500), (labels == 0) & (image > -500)
    orders = set()
    for seed in range(40):
        out = augment.remap_contrast(image, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == image.shape and np.isfinite(out).all()
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert np.median(out[air]) == 0.0  # air stays below the z-score's foreground
        means = [float(np.mean(out[labels == value])) for value in (1, 2, 3)] + [float(np.mean(out[tissue]))]
        orders.add(tuple(np.argsort(means)))
    # CT order is fat (2) < soft tissue < ball 1 < ball 3; a monotonic map would keep that one order.
    assert len(orders) >= 6, orders


def test_contrast_remap_keeps_padding_and_lung_dark_and_takes_the_range_from_the_image():
    image, _ = _phantom(32)
    image[:, :, :6] = -850.0  # a slab of lung
    start = np.array([-8, 4, -3])
    window = crop_with_padding(image, start, 40)
    inside = crop_inside(image.shape, start, 40)
    assert inside.sum() == np.prod(np.minimum(start + 40, 32) - np.maximum(start, 0))
    assert (window[~inside] == 0).all() and inside.any() and (~inside).any()
    augment = Augmentations(remap_probability=1.0)
    lung = np.zeros_like(window, dtype=bool)
    lung[:, :, 3:9] = True  # the crop starts 3 planes before the volume
    lung &= inside
    for seed in range(20):
        out = augment.remap_contrast(window, np.random.default_rng(seed), inside)
        assert (out[~inside] == 0).all()  # padding is not mapped like a CT's 0 HU into tissue
        assert np.mean(out[lung] == 0) > 0.95
        assert (out[inside] > 0).mean() > 0.3  # the body is mapped to tissue values
        unpadded = augment.remap_contrast(window, np.random.default_rng(seed))
        assert (unpadded[~inside] > 0).all()  # without the mask, 0 HU padding would become tissue


def test_contrast_remap_is_drawn_with_its_probability():
    image, _ = _phantom(24)
    rng = np.random.default_rng(1)
    changed = sum(not np.array_equal(Augmentations(remap_probability=0.3).remap_contrast(image, rng), image)
                  for _ in range(200))
    assert 35 <= changed <= 85  # 60 expected


def test_foreground_gamma_keeps_tissue_on_its_side_of_0_hu_where_window_gamma_moves_it():
    """Version 2 and 3's gamma (min-max of the window) took a CT's liver (60 HU) below 0 HU, out
    of the z-score's foreground; over the foreground it stays a foreground voxel."""
    window = np.array([-1000.0, -100.0, 0.0, 60.0, 1000.0], dtype=np.float32)
    for gamma_on in ("window", "foreground"):
        augment = Augmentations(intensity_probability=1.0, gamma_on=gamma_on)
        foreground_kept, crossed = True, False
        for seed in range(20):
            out = augment.apply_before_normalisation(window.copy(), np.random.default_rng(seed))
            foreground_kept &= bool(np.array_equal(out > 0, window > 0))
            crossed |= bool(out[3] <= 0 or out[1] > 0)
        if gamma_on == "foreground":
            assert foreground_kept and not crossed
        else:
            assert crossed  # the documented flaw, kept as the default for reproducibility
    out = Augmentations(intensity_probability=1.0, gamma_on="foreground").apply_before_normalisation(
        window.copy(), np.random.default_rng(0))
    assert np.array_equal(out[:3], window[:3]) and out[4] == pytest.approx(1000.0)  # the rest untouched, max fixed
    assert out[3] != pytest.approx(60.0)  # the gamma did act inside the foreground
    tiny = np.array([0.0, 1e-30, 3000.0], dtype=np.float32)  # gamma > 1 would underflow 1e-30 to 0
    for seed in range(10):
        out = Augmentations(intensity_probability=1.0, gamma_on="foreground").apply_before_normalisation(
            tiny.copy(), np.random.default_rng(seed))
        assert np.array_equal(out > 0, tiny > 0)
    air = np.full(4, -1000.0, dtype=np.float32)  # no foreground: nothing to do
    out = Augmentations(intensity_probability=1.0, gamma_on="foreground").apply_before_normalisation(
        air, np.random.default_rng(0))
    assert np.array_equal(out, air)


def test_gamma_on_choices_of_the_torch_free_parser_match_the_config():
    from sammed.cli import build_parser
    from sammed.training.config import GAMMA_DOMAINS

    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions  # noqa: SLF001
                 if a.dest == "gamma_on")
    assert tuple(train.choices) == GAMMA_DOMAINS


def test_recipe_changes_name_what_a_resume_would_change_but_not_the_run_length():
    started = TrainConfig(gamma_on="foreground", bias_field_max=0.1, max_steps=100)
    resumed = TrainConfig(max_steps=500, time_limit_minutes=30)  # flags not repeated: defaults
    changes = resumed.recipe_changes(started.to_dict())
    assert len(changes) == 2
    assert any(c.startswith("gamma_on: 'foreground' -> 'window'") for c in changes)
    assert any(c.startswith("bias_field_max: 0.1 -> 0.4") for c in changes)
    assert TrainConfig(gamma_on="foreground", bias_field_max=0.1).recipe_changes(started.to_dict()) == []


def test_bias_field_max_bounds_the_field():
    """The default 0.4 (versions 2 and 3) multiplies a window by tens; 0.1 stays scanner-like."""
    window = torch.ones(1, 32, 32, 32)
    peaks = {}
    for coeff in (0.4, 0.1):
        transform = Augmentations(intensity_probability=1.0, bias_field_max=coeff).intensity_transform()
        bias = transform.transforms[1]
        values = []
        for seed in range(10):
            bias.set_random_state(seed=seed)
            values.append(float(torch.as_tensor(bias(window)).max()))
        peaks[coeff] = float(np.median(values))
    assert peaks[0.1] < 4.0 < 10.0 < peaks[0.4]


def test_item_weights_give_pseudo_objects_their_share_and_balance_cases():
    items = [Item("big", v) for v in range(1, 101)] + [Item("small", 1)] + [Item("big__svfine", v) for v in range(1, 50)]
    weights = item_weights(items, 0.25).numpy()
    pseudo = np.array(["__" in i.case_id for i in items])
    assert weights[pseudo].sum() == pytest.approx(0.25)
    assert weights[~pseudo].sum() == pytest.approx(0.75)
    big = weights[:100].sum()
    assert weights[100] == pytest.approx(big / np.sqrt(100))  # 1/sqrt(n) per item: the big case weighs sqrt(100) x


def test_size_exponent_draws_large_masks_more_often_within_each_group():
    items = [Item("ct", 1), Item("ct", 2), Item("ct", 3), Item("ct__svfine", 1), Item("ct__svfine", 2)]
    voxels = [100, 400, 10_000, 50, 5000]
    flat = item_weights(items, 0.25, voxels, 0.0).numpy()
    assert flat[0] == pytest.approx(flat[2])
    weights = item_weights(items, 0.25, voxels, 0.5).numpy()
    assert weights[:3].sum() == pytest.approx(0.75) and weights[3:].sum() == pytest.approx(0.25)  # shares kept
    assert weights[2] / weights[0] == pytest.approx(10.0)  # sqrt(10000 / 100)
    assert weights[4] / weights[3] == pytest.approx(10.0)
    uniform = item_weights(items, None, voxels, 1.0).numpy()  # no pseudo share: one pool
    assert uniform.sum() == pytest.approx(1.0) and uniform[2] / uniform[0] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        item_weights(items, 0.25, None, 0.5)


def test_case_weights_multiply_matching_cases_within_their_group_and_refuse_a_pattern_that_matches_none():
    items = [Item("tsct", 1), Item("tsct", 2), Item("atlas", 1), Item("atlas", 2), Item("tsct__otsu3", 1), Item("atlas__otsu3", 1)]
    plain = item_weights(items, 0.25).numpy()
    assert plain[0] == pytest.approx(plain[2])
    weighted = item_weights(items, 0.25, case_weights=(("tsct", 4.0),)).numpy()
    assert weighted[:4].sum() == pytest.approx(0.75) and weighted[4:].sum() == pytest.approx(0.25)  # shares kept
    assert weighted[0] / weighted[2] == pytest.approx(4.0)  # "tsct" is not a pattern for "tsct__otsu3"
    assert weighted[4] == pytest.approx(weighted[5])
    both = item_weights(items, 0.25, case_weights=(("tsct*", 4.0), ("*__otsu3", 0.5))).numpy()
    assert both[4] / both[5] == pytest.approx(4.0)  # factors multiply: 4 x 0.5 against 0.5
    assert both[0] / both[2] == pytest.approx(4.0)
    with pytest.raises(TrainingDataError, match="tsc1"):
        item_weights(items, 0.25, case_weights=(("tsc1", 2.0),))
    with pytest.raises(TrainingConfigError):
        TrainConfig(case_weights=(("tsct", 0.0),))
    config = TrainConfig(case_weights=(("tsct", 4.0), ("ch2*", 0.5)))
    assert TrainConfig.from_dict(config.to_dict()).case_weights == (("tsct", 4.0), ("ch2*", 0.5))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))).case_weights == config.case_weights


def test_extra_target_size_exponent_draws_the_large_object_a_window_shows_more_often(tmp_path: Path):
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[:20, :20, :25] = 1  # 10,000 voxels
    for value in range(2, 10):  # eight objects of 125 voxels
        labels[30:35, 30:35, 4 * value:4 * value + 5] = value
    items = [Item("ct", v) for v in range(1, 10)]
    rng = np.random.default_rng(0)

    def large_share(exponent: float) -> float:
        dataset = WindowDataset(tmp_path, items, window=40, targets_per_window=2,
                                extra_target_size_exponent=exponent)
        return float(np.mean([dataset._extra_classes(Item("ct", 9), labels, rng) == [1] for _ in range(400)]))

    assert 0.05 < large_share(0.0) < 0.25  # uniform: 1 in 8
    assert large_share(1.0) > 0.85  # 10,000 / (10,000 + 7 x 125)
    with pytest.raises(TrainingConfigError):
        TrainConfig(extra_target_size_exponent=2.5)


def test_exclude_cases_leaves_out_matching_cases_and_refuses_a_pattern_that_matches_none():
    manifest = {"cases": {
        "ct": {"classes": {"1": 500, "2": 900}},
        "ct__svfine": {"classes": {"1": 300}},
        "ct__otsu3": {"classes": {"1": 4000}},
        "mr__svcoarse": {"classes": {"3": 2000}},
    }}
    kept = list_items(manifest, 100, exclude_cases=("*__svfine", "*__svcoarse"))
    assert [(i.case_id, i.class_id) for i in kept] == [("ct", 1), ("ct", 2), ("ct__otsu3", 1)]
    assert len(list_items(manifest, 100)) == 5
    with pytest.raises(TrainingDataError, match="svfnie"):
        list_items(manifest, 100, exclude_cases=("*__svfnie",))
    with pytest.raises(TrainingDataError):  # nothing left to train on
        list_items(manifest, 100, exclude_cases=("*",))
    assert TrainConfig.from_dict(TrainConfig(exclude_cases=("*__sv*",)).to_dict()).exclude_cases == ("*__sv*",)


def test_augmented_windows_keep_the_first_click_on_the_target(tmp_path: Path, data_dir: Path):
    ts = data_dir / "totalsegmentator_examples"
    image = read_image(ts / "example_ct_sm.nii.gz")
    seg = read_image(ts / "example_seg.nii.gz").array
    root = tmp_path / "data"
    write_image(image, root / "imagesTr" / "ct_0000.nii.gz")
    write_image(image.with_array(np.where(seg == LIVER, 1, 0).astype(np.uint8)), root / "labelsTr" / "ct.nii.gz")
    items = list_items(build_cache(root, tmp_path / "cache", 3.0), 0)
    dataset = WindowDataset(tmp_path / "cache", items, window=64, centre_on_click=True, slab_probability=0.3,
                            augment=Augmentations((0.6, 1.6), 0.5, 0.5, remap_probability=0.5))
    fractions = []
    for _ in range(16):
        sample = dataset[0]
        assert sample["image"].shape == (1, 64, 64, 64) and torch.isfinite(sample["image"]).all()
        i, j, k = sample["first_click"][0].long().tolist()
        assert sample["label"][0, i, j, k] == 1
        fractions.append(float(sample["label"][0].mean()))
    assert max(fractions) > 1.5 * min(fractions)  # the liver fills the window at different scales


def test_config_validates_the_new_options():
    with pytest.raises(TrainingConfigError):
        TrainConfig(scale_range=(2.0, 1.0))
    with pytest.raises(TrainingConfigError):
        TrainConfig(pseudo_fraction=1.5)
    with pytest.raises(TrainingConfigError):
        TrainConfig(size_exponent=-0.5)
    with pytest.raises(TrainingConfigError):
        TrainConfig(remap_probability=-0.1)
    with pytest.raises(TrainingConfigError):
        TrainConfig(bias_field_max=1.5)
    with pytest.raises(TrainingConfigError):
        TrainConfig(gamma_on="image")
    config = TrainConfig(scale_range=(0.7, 1.5), pseudo_fraction=0.4, remap_probability=0.3,
                         bias_field_max=0.1, gamma_on="foreground")
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.skipif(not INVESALIUS_EXAMPLE.is_file(), reason="Debian package invesalius-examples not installed")
def test_invesalius_project_reads_ct_and_masks():
    image, masks = read_invesalius_project(INVESALIUS_EXAMPLE)
    assert image.shape == (256, 256, 108)
    assert image.array.min() >= -1024 and image.array.max() > 1000  # Hounsfield units
    assert len(masks) == 2 and all(m.shape == image.shape for m in masks.values())
    bone = min(masks.values(), key=lambda m: int(m.sum()))
    assert float(image.array[bone].mean()) > 300  # the smaller mask is bone
