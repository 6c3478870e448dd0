"""How much memory a training step needs, measured before the first step.

The tensors autograd keeps for the backward pass dominate a step: :func:`saved_bytes` counts
them (distinct storages, parameters left out) while the student runs one and then two global
views, and one and then two local views. The difference is what each further view keeps; the
rest is kept once per step whatever the batch (the head's normalised last layer: 65536 x 256
floats, and its companions). A step keeps the former for every view of every item of the
process, beside the optimizer's state (gradients, AdamW's two moments of the student, and the
square root of the second moment its multi-tensor step computes, one more copy of the
parameters while it runs) and the logits of every view. With gradient checkpointing autograd
keeps only each block's input; the backward pass then recomputes one block at a time for all
the views of a forward call, holding that block's activations and their gradients: twice one
block's share of what the network keeps without checkpointing. :func:`check` refuses a step
that does not fit in the memory the device has free (the CPU's ``MemAvailable``, CUDA's free
memory), naming what to lower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from zerolabel.adapt.network import StudentNet
from zerolabel.errors import ConfigError

logger = logging.getLogger(__name__)

HEADROOM = 0.6
"""Share of the free memory a step may plan to use. The estimate counts tensors; on the CPU
the resident set measured 1.1 to 1.6 times it (``bench/bench_adapt.py``: what the allocator
keeps, and transients of the backward pass not modelled here)."""

GIB = 2**30


@dataclass(frozen=True)
class StepMemory:
    """Bytes a step needs on one process.

    per_global_view, per_local_view: kept for the backward pass per view. views: (global,
    local) views of the process's items. state: gradients, AdamW's moments of the student and
    its step's temporary square root (its weights and the teacher's are already in memory).
    logits: the head's outputs and their softmaxes. fixed: kept for the backward pass once per
    step, whatever its views. recompute: a checkpointed block recomputed during the backward
    pass, with its gradients (0 without checkpointing).
    """

    per_global_view: int
    per_local_view: int
    views: tuple[int, int]
    state: int
    logits: int
    fixed: int = 0
    recompute: int = 0

    @property
    def activations(self) -> int:
        per_view = self.views[0] * self.per_global_view + self.views[1] * self.per_local_view
        return per_view + self.fixed

    @property
    def total(self) -> int:
        """What the step adds to the memory in use before it."""
        return self.activations + self.recompute + self.state + self.logits


def saved_bytes(run: Callable[[], torch.Tensor], parameters: Iterable[nn.Parameter]) -> int:
    """Bytes of the distinct storages autograd saves while ``run`` builds its graph (the
    parameters' own storages not counted)."""
    skip = {param.untyped_storage().data_ptr() for param in parameters}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    del out
    return sum(seen.values())


def step_memory(
    student: StudentNet,
    *,
    global_size: int,
    local_size: int,
    views: tuple[int, int],
    out_dim: int,
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> StepMemory:
    """Measure what a step of ``views`` (global, local) views needs.

    Args:
        student: the student (backbone and head) as training calls it: ``student(global views,
            local views)``.
        global_size, local_size: sides of the views in pixels.
        views: the process's global and local views in a step.
        out_dim: the head's outputs.
        device: where it runs.
        autocast: the forward pass's autocast dtype, if any.
    """
    params = [p for p in student.parameters() if p.requires_grad]

    def kept(size: int, count: int, is_global: bool) -> int:
        images = torch.zeros(count, 3, size, size, device=device)
        empty = torch.zeros(0, 3, size, size, device=device)
        inputs = (images, empty) if is_global else (empty, images)
        context = (
            torch.autocast(device.type, dtype=autocast)
            if autocast is not None
            else torch.autocast(device.type, enabled=False)
        )
        with context:
            return saved_bytes(lambda: student(*inputs), params)

    one_global, one_local = kept(global_size, 1, True), kept(local_size, 1, False)
    per_global = max(kept(global_size, 2, True) - one_global, 0)
    per_local = max(kept(local_size, 2, False) - one_local, 0)
    fixed = max(one_global - per_global, one_local - per_local, 0)
    recompute = 0
    if student.checkpointing:
        depth = len(cast(Any, student.backbone).blocks)
        student.checkpointing = False  # what a view keeps without it, a block's share of it
        try:
            whole_global = kept(global_size, 2, True) - kept(global_size, 1, True)
            whole_local = kept(local_size, 2, False) - kept(local_size, 1, False)
        finally:
            student.checkpointing = True
        recompute = 2 * max(views[0] * whole_global, views[1] * whole_local) // depth
    # gradient, two moments, and the square root of the second moment during the step
    state = 4 * sum(p.numel() * p.element_size() for p in params)
    logits = (views[0] + views[1]) * out_dim * 4 * 3
    return StepMemory(per_global, per_local, views, state, logits, fixed, recompute)


def free_bytes(device: torch.device) -> int | None:
    """Memory free on the device: CUDA's free memory, the CPU's ``MemAvailable`` (Linux);
    None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def check(need: StepMemory, free: int | None, *, items: int, checkpointing: bool) -> None:
    """Refuse a step that does not fit in ``free`` bytes (nothing is checked when unknown).

    Raises:
        ConfigError: the step needs more than :data:`HEADROOM` of the free memory; the message
            gives both and what lowers the need.
    """
    logger.info(
        "a step needs about %.2f GiB: %.2f GiB of activations for %d items (%d global and %d "
        "local views), %.2f GiB of optimizer state",
        need.total / GIB, need.activations / GIB, items, *need.views, need.state / GIB,
    )  # fmt: skip
    if free is None or need.total <= HEADROOM * free:
        return
    advice = "lower --batch-size, --local-crops or --objects"
    if not checkpointing:
        advice += ", or add --grad-checkpointing"
    raise ConfigError(
        f"a training step of {items} items needs about {need.total / GIB:.1f} GiB "
        f"({need.activations / GIB:.1f} GiB of activations, {need.state / GIB:.1f} GiB of "
        f"optimizer state) but {free / GIB:.1f} GiB are free: {advice}"
    )
