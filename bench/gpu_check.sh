#!/usr/bin/env bash
# GPU check on a machine with CUDA: the gpu-marked tests, then the pipeline and queue benchmarks
# at the throughput targets' settings (ViT-S/16, 480 px), and an adapt step. Prints markdown tables.
# Usage: bash bench/gpu_check.sh            (from the repository root, environment installed)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
python -m pytest -m gpu tests/gpu -q
python bench/bench_pipeline.py --only methods --device cuda --sizes 480 --batches 1 32
for precision in fp32 fp16; do
  python bench/bench_queue.py --device cuda --precision "$precision" --method lost \
    --images 1024 --batch 32 --workers 1
done
python bench/bench_queue.py --device cuda --precision fp16 --method maskcut \
  --images 256 --batch 32 --workers 1
python bench/bench_adapt.py --only step --device cuda --batches 32 64 --precision bf16
