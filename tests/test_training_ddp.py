"""Two CPU processes under torchrun (gloo): the loss falls and both ranks end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed.io import read_image
from sammed.io.writers import write_image

LIVER = 5
STEPS = 8

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from sammed.training import TrainConfig, train

    data, out = sys.argv[1], sys.argv[2]
    config = TrainConfig(model="sam-med3d-tiny", epochs=100, max_steps=int(sys.argv[3]), batch_size=1,
                         accumulation_steps=1, lr=4e-4, decoder_lr_scale=1.0, num_clicks=2, num_workers=0,
                         min_label_voxels=100, max_shift_fraction=0.0, flip_probability=0.0,
                         case_weights=(("ct", 2.0),))  # the weighted sampler's distributed path
    summary = train(config, data, out, show_progress=False)
    rank = int(os.environ["RANK"])
    torch.save(summary.model.state_dict(), f"{out}/rank{rank}.pt")
    with open(f"{out}/losses{rank}.json", "w") as handle:
        json.dump({"losses": summary.step_losses, "world": int(os.environ["WORLD_SIZE"])}, handle)
    """
)


def test_two_process_training_syncs_weights_and_learns(tmp_path: Path, data_dir: Path):
    ts = data_dir / "totalsegmentator_examples"
    image = read_image(ts / "example_ct_sm.nii.gz")
    liver = (read_image(ts / "example_seg.nii.gz").array == LIVER).astype(np.uint8)
    write_image(image, tmp_path / "data" / "imagesTr" / "ct_0000.nii.gz")
    write_image(image.with_array(liver), tmp_path / "data" / "labelsTr" / "ct.nii.gz")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(worker), str(tmp_path / "data"), str(out), str(STEPS)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), f"ranks differ at {key}"
    logs = [json.loads((out / f"losses{r}.json").read_text()) for r in (0, 1)]
    assert logs[0]["world"] == 2 and len(logs[0]["losses"]) == STEPS
    assert logs[0]["losses"] == pytest.approx(logs[1]["losses"])  # logged loss is averaged over ranks
    losses = logs[0]["losses"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    # Only rank 0 writes checkpoints and the metrics log.
    assert (out / "latest.pth").is_file()
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == STEPS + 1


WORKER_2D = textwrap.dedent(
    """
    import os, sys
    import torch
    from sammed.training.trainer2d import Train2DConfig, train_2d

    tiny = dict(img_size=128, encoder_embed_dim=32, encoder_depth=4, encoder_num_heads=2,
                encoder_global_attn_indexes=(0, 1, 2, 3), window_size=4, prompt_embed_dim=32, decoder_mlp_dim=64)
    config = Train2DConfig(model="sam-unet-r34", epochs=2, max_steps=2, batch_size=1, mask_num=2, num_workers=0,
                           model_overrides=tiny)
    summary = train_2d(config, sys.argv[1], sys.argv[2])
    torch.save(summary.model.state_dict(), f"{sys.argv[2]}/rank{os.environ['RANK']}.pt")
    """
)


def test_two_process_sam_unet_ends_identical_including_batchnorm_statistics(tmp_path: Path, data_dir: Path):
    worker = tmp_path / "worker2d.py"
    worker.write_text(WORKER_2D)
    out = tmp_path / "run2d"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
               str(data_dir / "sammed2d_demo_2d" / "image2label_train.json"), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert any("running_mean" in k for k in weights[0])
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), f"ranks differ at {key}"
    assert (out / "latest.pth").is_file()
