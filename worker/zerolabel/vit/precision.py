"""Whether a reduced precision runs fast where the model runs, decided once per loaded backbone.

bf16 on a CPU is only faster than fp32 where its matrix products run on bf16 instructions
(AVX512_BF16 or AMX-BF16, through oneDNN). Without them the same autocast converts every
operand back and forth and runs several times slower than fp32 (3x with AVX-512 alone, 7x with
AVX2, measured), so there the forward pass stays fp32 and one log line says why. CUDA
precisions are left as asked.

Where bf16 runs on the CPU, the linear layers keep their weights in bf16: autocast casts a
weight that needs no gradient again on every call (it caches only the casts of trainable
leaves), 96 casts per ViT-S forward pass, and this does it once, to the same values.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (``/proc/cpuinfo`` spelling) of instructions that compute in bf16."""

CPUINFO = Path("/proc/cpuinfo")
"""Where the flags are read when torch cannot list them (Linux)."""

_ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
"""oneDNN's variables capping the instructions it uses."""

_BF16_ISA_MARKS = ("BF16", "AMX", "AVX10", "ALL", "DEFAULT")
"""A capped ISA name holding one of these still includes bf16 instructions."""


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU, lower case; empty when they cannot be read."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return frozenset(name for name, present in capabilities.items() if present is True)
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16_missing() -> str | None:
    """Why bf16 would run slower than fp32 on this CPU; None when it has the instructions."""
    mkldnn: Any = torch.backends.mkldnn
    if not mkldnn.is_available():
        return "this torch build has no oneDNN CPU kernels"
    if not BF16_FLAGS & cpu_flags():
        return "this CPU has neither AVX512_BF16 nor AMX-BF16 instructions"
    for variable in _ISA_CAPS:
        cap = os.environ.get(variable, "").strip().upper()
        if cap and not any(mark in cap for mark in _BF16_ISA_MARKS):
            return f"{variable}={cap} keeps oneDNN from its bf16 instructions"
    return None


def autocast_dtype(requested: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype the forward pass runs with on ``device`` (None: no autocast, fp32).

    Args:
        requested: the dtype the settings ask for (None for fp32).
        device: where the model runs.
    """
    if requested is not torch.bfloat16 or device.type != "cpu":
        return requested
    missing = cpu_bf16_missing()
    if missing is None:
        return requested
    logger.warning("precision bf16 asked for, but %s: running fp32, which is faster here", missing)
    return None


def store_linear_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Keep every linear layer's weight and bias in ``dtype``, the values autocast would cast
    them to on every call; the model then runs under that autocast only."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)
