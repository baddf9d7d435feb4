"""3D training: data cache and windows, the click loop, checkpoints, and train -> resume -> segment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed.cli import main as sammed_main
from sammed.io import read_image
from sammed.io.image import Geometry, Image
from sammed.io.writers import write_image
from sammed.models import SamMed3DConfig, build_model, build_sam_med3d
from sammed.models.checkpoint import read_checkpoint
from sammed.training import TrainConfig, TrainingConfigError, TrainingDataError, WindowDataset, build_cache
from sammed.training.checkpointing import plain_scheduler_state, restore_scheduler_state, save_checkpoint
from sammed.training.dataset import canonical_grid, crop_with_padding, list_items
from sammed.training.interaction import dice_ce_loss, run_interaction
from sammed.training.optim import build_optimizer, build_scheduler

LIVER, SPLEEN = 5, 1


def make_nnunet(root: Path, image: Image, labels: np.ndarray, case_id: str = "case") -> Path:
    write_image(image, root / "imagesTr" / f"{case_id}_0000.nii.gz")
    write_image(image.with_array(labels.astype(np.uint8)), root / "labelsTr" / f"{case_id}.nii.gz")
    return root


@pytest.fixture(scope="module")
def ct_dataset(tmp_path_factory, data_dir: Path) -> Path:
    """The bundled-size TotalSegmentator CT with its liver and spleen labels, in nnU-Net layout."""
    ts = data_dir / "totalsegmentator_examples"
    image = read_image(ts / "example_ct_sm.nii.gz")
    seg = read_image(ts / "example_seg.nii.gz").array
    labels = np.where(np.isin(seg, [LIVER, SPLEEN]), seg, 0)
    return make_nnunet(tmp_path_factory.mktemp("nnunet"), image, labels, "ct")


def test_canonical_grid_covers_the_volume_in_ras_order():
    flipped = Geometry((10, 20, 5), (1.0, 1.0, 2.0), (3.0, -4.0, 5.0), np.diag([1.0, -1.0, 1.0]))
    grid = canonical_grid(flipped, 1.5)
    assert np.allclose(grid.direction, np.diag([-1.0, -1.0, 1.0]))
    corners = flipped.index_to_world(np.array([[-0.5, -0.5, -0.5], [9.5, 19.5, 4.5]]), "LPS")
    index = grid.world_to_index(corners, "LPS")
    assert np.all(index >= -0.5 - 1e-6) and np.all(index <= np.array(grid.size) - 0.5 + 1e-6)
    assert grid.size == (7, 14, 7)  # ceil(10/1.5), ceil(20/1.5), ceil(10/1.5)


def test_crop_with_padding_fills_outside_with_zero():
    volume = np.arange(27).reshape(3, 3, 3) + 1
    crop = crop_with_padding(volume, np.array([-1, 1, 2]), 3)
    assert crop[0].sum() == 0  # the padded first slab
    assert crop[1, 0, 0] == volume[0, 1, 2] and crop[1, 0, 1] == 0


def test_cache_manifest_and_items(ct_dataset, tmp_path):
    manifest = build_cache(ct_dataset, tmp_path, 1.5)
    entry = manifest["cases"]["ct"]
    assert set(entry["classes"]) == {str(LIVER), str(SPLEEN)}
    # 3 mm -> 1.5 mm: each label voxel becomes about 8 voxels.
    original = int((read_image(ct_dataset / "labelsTr" / "ct.nii.gz").array == LIVER).sum())
    assert entry["classes"][str(LIVER)] == pytest.approx(8 * original, rel=0.05)
    assert [i.class_id for i in list_items(manifest, 0)] == [SPLEEN, LIVER]
    assert [i.class_id for i in list_items(manifest, 0, {LIVER})] == [LIVER]
    with pytest.raises(TrainingDataError):
        list_items(manifest, 10**9)
    # A second build with unchanged sources keeps the cached file.
    stamp = (tmp_path / "ct.npz").stat().st_mtime_ns
    build_cache(ct_dataset, tmp_path, 1.5)
    assert (tmp_path / "ct.npz").stat().st_mtime_ns == stamp


def test_window_dataset_draws_normalised_windows_on_the_label(ct_dataset, tmp_path):
    manifest = build_cache(ct_dataset, tmp_path, 1.5)
    dataset = WindowDataset(tmp_path, list_items(manifest, 0, {LIVER}), window=64, flip_probability=0.5)
    sample = dataset[0]
    assert sample["image"].shape == (1, 64, 64, 64) and sample["label"].shape == (1, 64, 64, 64)
    assert sample["label"].sum() > 0 and set(sample["label"].unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(sample["image"]).all()
    # Without offset and flips the window is the official bounding-box-centred crop, z-scored over
    # its raw voxels > 0 (the inference normalisation): those voxels end with mean 0 and std 1.
    fixed = WindowDataset(tmp_path, list_items(manifest, 0, {LIVER}), window=64, max_shift_fraction=0, flip_probability=0)
    a, b = fixed[0], fixed[0]
    assert torch.equal(a["image"], b["image"])
    with np.load(tmp_path / "ct.npz") as cached:
        raw_image, raw_label = cached["image"], cached["label"]
    liver = np.argwhere(raw_label == LIVER)
    centre = (liver.min(axis=0) + liver.max(axis=0) + 1) // 2
    raw = crop_with_padding(raw_image, centre - 32, 64)
    normalised = a["image"][0][torch.from_numpy(raw > 0)]
    assert normalised.numel() > 1000
    assert abs(float(normalised.mean())) < 1e-4 and abs(float(normalised.std()) - 1.0) < 1e-4


def test_window_dataset_adds_the_other_classes_of_the_window_as_targets(ct_dataset, tmp_path):
    manifest = build_cache(ct_dataset, tmp_path, 3.0)
    items = list_items(manifest, 0)
    dataset = WindowDataset(tmp_path, items, window=64, max_shift_fraction=0, flip_probability=0, targets_per_window=4)
    spleen_item = [i for i, item in enumerate(items) if item.class_id == SPLEEN][0]
    sample = dataset[spleen_item]
    label, valid = sample["label"], sample["target_valid"]
    assert label.shape == (4, 64, 64, 64) and valid.tolist() == [True, True, False, False]
    with np.load(tmp_path / "ct.npz") as cached:
        raw_label = cached["label"]
    spleen = np.argwhere(raw_label == SPLEEN)
    crop = crop_with_padding(raw_label, (spleen.min(axis=0) + spleen.max(axis=0) + 1) // 2 - 32, 64)
    # Row 0 is the drawn item, row 1 the only other class in view; padding rows are empty.
    assert np.array_equal(label[0].numpy() > 0, crop == SPLEEN)
    assert np.array_equal(label[1].numpy() > 0, crop == LIVER) and (crop == LIVER).sum() >= 64
    assert label[2:].sum() == 0
    # One target per window keeps the official single-target shape.
    single = WindowDataset(tmp_path, items, window=64, max_shift_fraction=0, flip_probability=0)[spleen_item]
    assert single["label"].shape == (1, 64, 64, 64) and torch.equal(single["label"][0], label[0])


def test_slab_augmentation_blanks_everything_outside_a_slab_through_the_target(ct_dataset, tmp_path):
    window = np.full((40, 40, 40), 7.0, dtype=np.float32)
    labels = np.zeros((40, 40, 40), dtype=np.uint16)
    labels[5:35, 10:30, 12:20] = 3
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, kept = WindowDataset._keep_slab(window, labels, 3, rng)
        planes = [np.flatnonzero(image.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
        cut = [axis for axis in range(3) if len(planes[axis]) < 40]
        assert len(cut) == 1  # one axis is cut, to one contiguous run of 8-32 planes
        run = planes[cut[0]]
        assert np.array_equal(run, np.arange(run[0], run[-1] + 1)) and len(run) <= 32
        assert (kept == 3).any() and np.array_equal(kept > 0, (labels > 0) & (image > 0))
    # Through the dataset: the target shrinks, the window stays normalised and finite.
    items = list_items(build_cache(ct_dataset, tmp_path, 3.0), 0, {LIVER})
    full = WindowDataset(tmp_path, items, window=64, max_shift_fraction=0, flip_probability=0)[0]
    slabbed = WindowDataset(tmp_path, items, window=64, max_shift_fraction=0, flip_probability=0, slab_probability=1.0)[0]
    assert 0 < slabbed["label"].sum() < full["label"].sum() and torch.isfinite(slabbed["image"]).all()


def test_click_centred_windows_put_the_first_click_on_the_target_at_the_window_centre(ct_dataset, tmp_path):
    items = list_items(build_cache(ct_dataset, tmp_path, 3.0), 0, {SPLEEN})
    dataset = WindowDataset(tmp_path, items, window=64, flip_probability=0.5, centre_on_click=True, targets_per_window=2)
    seen = set()
    for _ in range(12):
        sample = dataset[0]
        click = sample["first_click"][0]
        # The click is the window's centre voxel (or its mirror after a flip), on the target.
        assert set(click.tolist()) <= {31.0, 32.0}
        i, j, k = click.long().tolist()
        assert sample["label"][0, i, j, k] == 1
        assert torch.isnan(sample["first_click"][1]).all()  # extra targets draw their own clicks
        seen.add(tuple(click.tolist()))
    assert len(seen) > 1  # flips move it


def test_interaction_uses_given_first_clicks_and_draws_the_rest():
    model = _small_model()
    image = torch.randn(1, 1, 32, 32, 32)
    target = torch.zeros(1, 2, 32, 32, 32)
    target[0, 0, 10:20, 10:20, 10:20] = 1
    target[0, 1, 22:30, 2:8, 20:28] = 1
    given = torch.tensor([[[16.0, 16.0, 16.0], [float("nan")] * 3]])
    seen = []
    original = model.predict_low_res

    def spy(embedding, coords, labels, mask_input, **kw):
        if coords is not None:
            seen.append(coords.clone())
        return original(embedding, coords, labels, mask_input, **kw)

    model.predict_low_res = spy
    run_interaction(model, image, target, dice_ce_loss(), num_clicks=2, rng=np.random.RandomState(0),
                    mask_only_round_range=(0, 0), first_clicks=given)
    first = seen[0][:, 0]
    assert first[0].tolist() == [16.0, 16.0, 16.0]
    i, j, k = first[1].long().tolist()
    assert target[0, 1, i, j, k] == 1  # drawn on its own target


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingDataError, match="nnU-Net"):
        build_cache(tmp_path / "nope", tmp_path / "cache", 1.5)


def test_stage_two_needs_a_checkpoint_and_configs_round_trip():
    with pytest.raises(TrainingConfigError, match="checkpoint"):
        TrainConfig.for_stage(2)
    config = TrainConfig.for_stage(2, init_checkpoint="x.pth", classes=(1, 5))
    assert config.lr == pytest.approx(8e-5) and config.stage == 2
    assert TrainConfig.from_dict(config.to_dict()) == config


def _small_model() -> torch.nn.Module:
    config = SamMed3DConfig(img_size=32, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                            encoder_global_attn_indexes=(1,), window_size=2, prompt_embed_dim=48, decoder_heads=4,
                            decoder_mlp_dim=64)
    torch.manual_seed(0)
    return build_sam_med3d(config).train()


def test_interaction_feeds_clicks_and_masks_and_trains_both_parts():
    model = _small_model()
    image = torch.randn(2, 1, 32, 32, 32)
    target = torch.zeros(2, 1, 32, 32, 32)
    target[:, :, 8:20, 10:24, 6:18] = 1
    calls = []
    original = model.predict_low_res

    def spy(embedding, coords, labels, mask_input, **kw):
        calls.append((None if coords is None else coords.shape[1], float(mask_input.abs().sum())))
        return original(embedding, coords, labels, mask_input, **kw)

    model.predict_low_res = spy
    result = run_interaction(model, image, target, dice_ce_loss(), num_clicks=5, rng=np.random.RandomState(1),
                             mask_only_round_range=(2, 3), multi_click=True)
    # Rounds 0, 1, 3 carry all clicks so far; round 2 (drawn) and the last round are mask-only.
    assert [c[0] for c in calls] == [1, 2, None, 4, None]
    assert calls[0][1] == 0 and all(c[1] > 0 for c in calls[1:])  # previous logits fed back
    assert torch.isfinite(result.loss) and len(result.dice_per_round) == 5
    result.loss.backward()
    assert model.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.mask_decoder.iou_token.weight.grad is not None


def test_first_round_weight_scales_only_the_one_click_round():
    model = _small_model().eval()
    image = torch.randn(1, 1, 32, 32, 32)
    target = torch.zeros(1, 1, 32, 32, 32)
    target[:, :, 8:20, 10:24, 6:18] = 1
    losses = []

    def recording_loss(logits, truth):
        value = dice_ce_loss()(logits, truth)
        losses.append(float(value))
        return value

    def run(weight: float) -> float:
        losses.clear()
        with torch.no_grad():
            result = run_interaction(model, image, target, recording_loss, num_clicks=3, rng=np.random.RandomState(4),
                                     mask_only_round_range=(1, 2), first_round_weight=weight)
        return float(result.loss)

    plain = run(1.0)
    per_round = list(losses)
    assert plain == pytest.approx(sum(per_round), rel=1e-5)
    assert run(3.0) == pytest.approx(3 * per_round[0] + sum(per_round[1:]), rel=1e-5)
    assert losses == pytest.approx(per_round, rel=1e-5)  # same clicks, same masks: only the weighting changed


def test_interaction_decodes_every_valid_target_from_one_encoder_pass():
    model = _small_model()
    image = torch.randn(2, 1, 32, 32, 32)
    target = torch.zeros(2, 3, 32, 32, 32)
    target[:, 0, 8:20, 10:24, 6:18] = 1
    target[:, 1, 20:30, 2:8, 20:28] = 1
    valid = torch.tensor([[True, True, False], [True, False, False]])
    encoder_calls, decoded = [], []
    model.image_encoder.register_forward_hook(lambda module, args, out: encoder_calls.append(out.shape[0]))
    original = model.predict_low_res

    def spy(embedding, coords, labels, mask_input, **kw):
        decoded.append(embedding.shape[0])
        return original(embedding, coords, labels, mask_input, **kw)

    model.predict_low_res = spy
    result = run_interaction(model, image, target, dice_ce_loss(), num_clicks=3, rng=np.random.RandomState(0),
                             mask_only_round_range=(1, 2), target_valid=valid)
    assert encoder_calls == [2] and decoded == [3, 3, 3]  # 2 windows encoded, 3 targets decoded per round
    assert result.final_logits.shape == (3, 1, 32, 32, 32)
    result.loss.backward()
    assert model.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_optimizer_groups_and_scheduler_state_survive_the_safe_loader(tmp_path):
    model = _small_model()
    config = TrainConfig(lr=1e-3, milestones=(2, 4))
    optimizer = build_optimizer(model, config)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-4, 1e-4])
    scheduler = build_scheduler(optimizer, config)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    path = save_checkpoint(tmp_path / "s.pth", {"model_state_dict": model.state_dict(),
                                                "lr_scheduler_state_dict": plain_scheduler_state(scheduler.state_dict())})
    state = read_checkpoint(path)  # weights_only + allowlist: a Counter would be refused
    fresh = build_scheduler(build_optimizer(_small_model(), config), config)
    restore_scheduler_state(fresh, state["lr_scheduler_state_dict"])
    assert isinstance(fresh.milestones, Counter) and fresh.last_epoch == 3
    assert fresh.get_last_lr() == pytest.approx(scheduler.get_last_lr())


def test_train_resume_and_segment_with_the_result(ct_dataset, tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    common = ["train", str(ct_dataset), "--out", str(out), "--model", "sam-med3d-tiny", "--batch-size", "1",
              "--accumulation-steps", "1", "--num-clicks", "2", "--workers", "0", "--min-voxels", "100",
              "--epochs", "3", "--no-progress", "--seed", "7"]
    assert sammed_main(common + ["--max-steps", "2"]) == 0
    first = torch.load(out / "latest.pth", weights_only=True)
    assert set(first) >= {"model_state_dict", "optimizer_state_dict", "lr_scheduler_state_dict", "epoch"}
    assert first["epoch"] == 0 and first["step"] == 2

    capsys.readouterr()
    # a recipe flag that the first part did not have: the resumed run says so
    assert sammed_main(common + ["--max-steps", "4", "--resume", "--gamma-on", "foreground"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: --resume")]
    assert len(warning) == 1 and "gamma_on: 'window' -> 'foreground'" in warning[0]
    second = read_checkpoint(out / "latest.pth")
    assert second["step"] == 4 and second["epoch"] == 1  # the next epoch (2 items, batch 1)
    assert second["optimizer_state_dict"]["state"][0]["step"] == 4  # Adam moments carried over
    changed = [k for k, v in second["model_state_dict"].items() if not torch.equal(v, first["model_state_dict"][k])]
    assert changed, "resumed training did not update the weights"
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,step,loss") and len(rows) == 5

    model = build_model("sam-med3d-tiny", checkpoint=out / "latest.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, second["model_state_dict"][key])
    sample = data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    mask_path = tmp_path / "mask.nii.gz"
    assert sammed_main(["segment", str(sample), "--point", "84,58,20", "--out", str(mask_path),
                        "--model", "sam-med3d-tiny", "--checkpoint", str(out / "latest.pth")]) == 0
    mask = read_image(mask_path)
    assert mask.geometry.same_grid(read_image(sample).geometry)


def test_resume_without_a_checkpoint_is_a_one_line_error(ct_dataset, tmp_path, capsys):
    code = sammed_main(["train", str(ct_dataset), "--out", str(tmp_path / "empty"), "--model", "sam-med3d-tiny", "--resume"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "latest.pth" in err[0]


def test_freeze_image_encoder_trains_the_decoder_and_leaves_the_encoder_as_it_was(ct_dataset, tmp_path):
    common = ["train", str(ct_dataset), "--model", "sam-med3d-tiny", "--batch-size", "1", "--accumulation-steps", "1",
              "--num-clicks", "2", "--workers", "0", "--min-voxels", "100", "--epochs", "1", "--max-steps", "2",
              "--no-progress", "--seed", "7"]
    assert sammed_main(common + ["--out", str(tmp_path / "start")]) == 0
    start = read_checkpoint(tmp_path / "start" / "latest.pth")["model_state_dict"]
    for name, extra in (("free", []), ("frozen", ["--freeze-image-encoder"])):
        assert sammed_main(common + ["--out", str(tmp_path / name), "--stage", "2", "--lr", "1e-3",
                                     "--checkpoint", str(tmp_path / "start" / "latest.pth")] + extra) == 0
        state = read_checkpoint(tmp_path / name / "latest.pth")
        weights = state["model_state_dict"]
        moved = {k for k in weights if not torch.equal(weights[k], start[k])}
        assert any(k.startswith("mask_decoder.") for k in moved), name
        assert any(k.startswith("image_encoder.") for k in moved) == (name == "free")
        assert state["config"]["freeze_image_encoder"] == (name == "frozen")
