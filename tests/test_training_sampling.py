"""WeightedDistributedSampler: ranks split one weighted draw, and the weights hold across ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sammed.training.sampling import WeightedDistributedSampler


def test_ranks_deal_out_one_global_draw_that_follows_the_weights():
    weights = torch.tensor([0.7, 0.2, 0.1, 0.0])
    ranks = [WeightedDistributedSampler(weights, 3001, rank=r, world_size=2, seed=5) for r in (0, 1)]
    assert [len(s) for s in ranks] == [1501, 1501]
    draws = [list(s) for s in ranks]
    single = WeightedDistributedSampler(weights, 3002, rank=0, world_size=1, seed=5)
    merged = [index for pair in zip(*draws) for index in pair]
    assert merged == list(single)  # the same global sequence, dealt out in turn
    counts = np.bincount(merged, minlength=4) / len(merged)
    assert counts == pytest.approx([0.7, 0.2, 0.1, 0.0], abs=0.03)
    assert counts[3] == 0  # a zero weight is never drawn


def test_set_epoch_changes_the_draw_and_repeats_it_for_the_same_epoch():
    sampler = WeightedDistributedSampler(torch.ones(50), 40, rank=1, world_size=2, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    with pytest.raises(ValueError):
        WeightedDistributedSampler(torch.ones(3), 10, rank=2, world_size=2)
