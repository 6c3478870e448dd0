"""Worker GPU memory metrics (run when a GPU is present; skipped otherwise)."""

from __future__ import annotations

import pytest
import torch
from zerolabel import metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_gpu_memory_reports_what_this_process_holds_on_each_device():
    held = torch.empty(4 * 2**20, dtype=torch.uint8, device="cuda:0")  # 4 MiB
    (family,) = metrics.GpuMemoryCollector().collect()
    values = {tuple(s.labels.values()): s.value for s in family.samples}
    assert family.name == "zerolabel_worker_gpu_memory_bytes"
    assert len(values) == 2 * torch.cuda.device_count()
    assert values["cuda:0", "allocated"] == torch.cuda.memory_allocated(0) >= held.numel()
    assert values["cuda:0", "reserved"] >= values["cuda:0", "allocated"]
