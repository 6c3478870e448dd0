"""Several processes, one training: torchrun's environment, DistributedDataParallel, reductions.

``torchrun --nproc_per_node N -m zerolabel.cli.main adapt ...`` starts N copies of the
command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their
environment; :func:`from_environment` joins them into one process group (NCCL on CUDA, gloo on
CPU). Each process takes its share of every step's items, DistributedDataParallel averages the
gradients, and the teacher, the centre and the optimizer then move identically everywhere.
Without those variables, everything here is a no-op on one process.

Only rank 0 writes files and shows progress; a stop (a signal, a due checkpoint) is agreed by
all processes at the end of a step (:meth:`Distributed.any`), so they stop together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from zerolabel.errors import ConfigError

logger = logging.getLogger(__name__)

_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes the files and shows progress."""
        return self.rank == 0

    def share(self, batch_size: int) -> range:
        """The positions of this process's items in a step's batch (a contiguous slice)."""
        per_process = batch_size // self.world_size
        return range(self.rank * per_process, (self.rank + 1) * per_process)

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the processes (in place; returned)."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any process (every process must call it)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module as the processes train it: DistributedDataParallel when several."""
        if not self.active:
            return module
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: str, env: Mapping[str, str] | None = None) -> Distributed:
    """Join torchrun's process group, or run alone when its variables are absent.

    Args:
        device: the device asked for; on CUDA each process takes ``cuda:LOCAL_RANK``.
        env: the environment (default ``os.environ``).

    Raises:
        ConfigError: some of torchrun's variables are set but not all, or not numbers.
    """
    env = os.environ if env is None else env
    present = [name for name in _VARIABLES if name in env]
    if not present:
        return Distributed()
    if len(present) != len(_VARIABLES):
        missing = sorted(set(_VARIABLES) - set(present))
        raise ConfigError(f"{', '.join(missing)} not set: start several processes with torchrun")
    try:
        rank, world, local = (int(env[name]) for name in _VARIABLES)
    except ValueError:
        raise ConfigError(f"{'/'.join(_VARIABLES)} must be whole numbers") from None
    place = Distributed(rank, world, local)
    if not place.active:
        return place
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    logger.info("process %d of %d (%s)", rank, world, "nccl" if cuda else "gloo")
    return place


def process_device(device: str, place: Distributed) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` for CUDA under torchrun."""
    if place.active and (device == "cuda" or (device == "auto" and torch.cuda.is_available())):
        return f"cuda:{place.local_rank}"
    return device
