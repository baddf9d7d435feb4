"""Weighted draws of training items that hold under ``torchrun`` as well as in one process.

torch's ``DistributedSampler`` splits a uniform permutation across ranks and knows nothing of
weights, and ``WeightedRandomSampler`` knows nothing of ranks: with both options the trainer
used to fall back to uniform draws under ``torchrun``, silently training on another mixture
(``--pseudo-fraction``, ``--size-exponent``, ``--case-weights``) than the same command in one process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class WeightedDistributedSampler(Sampler[int]):
    """Draws with replacement in proportion to ``weights``, dealt out across ranks.

    Every rank draws the same global sequence of ``ceil(num_samples / world_size) * world_size``
    indices (a generator seeded with ``seed + epoch``, so no communication is needed) and keeps
    every ``world_size``-th one from position ``rank``: together the ranks follow the weights,
    and no draw is trained twice. Call :meth:`set_epoch` before each epoch, as with
    ``DistributedSampler``, or every epoch repeats the first one's draws.
    """

    def __init__(self, weights: torch.Tensor, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.per_rank = math.ceil(num_samples / world_size)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, self.per_rank * self.world_size, replacement=True, generator=generator)
        return iter(draws[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
