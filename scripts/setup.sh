#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: apt packages, a virtual environment,
# torch pinned to the CPU build FIRST (so nothing pulls a CUDA build), then the package with extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${EXTRAS:-dev,faces}

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  need=""
  # ffmpeg is bundled by imageio-ffmpeg; libgl/libglib are needed by opencv / open3d wheels.
  for p in libgl1 libglib2.0-0; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
  done
  if [ -n "$need" ]; then
    echo "[setup] apt-get install$need"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null) \
      || echo "[setup] warning: apt-get install$need failed; continuing"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "[setup] installing torch==$TORCH_VERSION (CPU wheel)"
  "$PY" -m pip install -q "torch==$TORCH_VERSION"
fi
stamp="$VENV/.nr-installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-$EXTRAS"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing neuralrender[$EXTRAS]"
  # The constraint keeps the already-installed CPU torch: pip never swaps it for a CUDA build.
  echo "torch==$TORCH_VERSION" > "$VENV/torch-constraint.txt"
  "$PY" -m pip install -q -c "$VENV/torch-constraint.txt" -e ".[$EXTRAS]"
  touch "$stamp"
fi
# Build the rasterizer's C++ CPU kernel once (cached in ~/.cache/neuralrender); without a compiler the
# pure-torch fallback is used, so a failure here is not fatal.
"$PY" -c "import sys; from neuralrender.graphics.raster_cpu import get_extension; sys.exit(0 if get_extension() else 1)" >/dev/null 2>&1 \
  || echo "[setup] note: C++ rasterizer kernel not built; the pure-torch fallback will be used"
if "$VENV/bin/pip" list 2>/dev/null | grep -qiE '^(nvidia-|triton )'; then
  echo "[setup] error: CUDA packages were installed into $VENV" >&2
  exit 1
fi
echo "[setup] ready: $("$PY" -c 'import torch; print("torch", torch.__version__)')"
