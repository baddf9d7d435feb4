"""Sharding an evaluation over processes started by ``torchrun`` (one node or several).

``torchrun --nproc_per_node N -m sammed eval ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
and the rendezvous address; :meth:`DistContext.from_env` joins the group with the ``gloo``
backend, which runs on any machine and only carries small Python objects here (case ids and
result rows): the models never communicate. Without those variables everything is a no-op and
the run is a plain single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

import torch.distributed as dist

__all__ = ["DistContext"]

# Ranks wait for the slowest one at the final gather; cases can take long, so be generous.
GROUP_TIMEOUT = timedelta(hours=24)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> "DistContext":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        owns = False
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", timeout=GROUP_TIMEOUT)
            owns = True
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.is_root else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather(self, obj: Any) -> Optional[list[Any]]:
        """Every rank's ``obj`` on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out: Optional[list[Any]] = [None] * self.world_size if self.is_root else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False
