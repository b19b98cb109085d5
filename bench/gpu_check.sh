#!/usr/bin/env bash
# The device check, one script: ResNet-50 on synthetic 224x224 images, bf16, through
# flywheel's own entry point (torchrun, DDP with nccl, one process, MLflow off) and a bare
# PyTorch loop (channels_last, bf16 autocast, torch.compile) on the same model and batch.
# Prints both samples/s, the ratio (goal: flywheel >= 0.95 of bare) and peak GPU memory;
# writes $OUT/gpu_check.txt (and .json) when OUT is set. Offline: installs nothing; needs
# torch, lightning and numpy (the GPU image has no mlflow/feast/kfp/pydantic-settings).
#
#   bench/gpu_check.sh           # on an H100/H200: about 3-4 minutes, capped at 5m40s
#   bench/gpu_check.sh --cpu     # tiny CPU configuration that checks the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
exec timeout --kill-after=10 340 "$PY" bench/gpu_check.py "$@"
