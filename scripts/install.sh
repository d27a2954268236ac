#!/usr/bin/env bash
# Create .venv and install the project with every extra needed for training, export, serving, benchmarks and tests.
# torch/torchvision are pinned: PyPI's torchvision does not import beside other torch builds (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch, torchvision, timm, open_clip, onnxruntime, fastapi; print('installed: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
