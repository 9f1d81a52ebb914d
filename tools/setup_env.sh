#!/usr/bin/env bash
# Creates .venv and installs ovseg_ros with its test extras. Idempotent.
# torch and torchvision come from PyPI as a matching pair (the CUDA build, several GB).
# A machine-local CPU-only torch wheel must never be paired with PyPI torchvision
# (torchvision's compiled ops then fail to load), so local find-links are switched off.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
export PIP_FIND_LINKS=""
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import torch, torchvision, torchvision.ops; torchvision.ops.deform_conv2d" 2>/dev/null \
   || ! .venv/bin/python -c "import ovseg_ros, ovseg_training, open_clip, pytest, pytest_timeout, hypothesis, rosbags, torchmetrics, lark, yaml, onnx_graphsurgeon, onnxconverter_common, scipy, numba, trackeval" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch>=2.1" "torchvision>=0.16"
  .venv/bin/python -m pip install --quiet -e ".[test,bag,onnx]" -e "training[test]"
  # TrackEval (HOTA, CLEAR, Identity; the tests' tracking metrics) without its dataset
  # readers' dependencies (opencv-python would shadow opencv-python-headless, matplotlib,
  # pycocotools): its metrics need numpy and scipy only
  .venv/bin/python -m pip install --quiet --no-deps "trackeval==1.3.0"
fi
.venv/bin/python - <<'PY'
import torch, torchvision
from torchvision.ops import deform_conv2d
x = torch.zeros(1, 1, 3, 3)
deform_conv2d(x, torch.zeros(1, 18, 3, 3), torch.zeros(1, 1, 3, 3), padding=1, mask=torch.ones(1, 9, 3, 3))
print(f"environment ready: torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
