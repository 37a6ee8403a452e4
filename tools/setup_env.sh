#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment and install the supported stack:
# torch 2.13 + torchvision 0.28, mmcv 2.1.0 built from source with its ops, mmengine 0.10.7,
# mmdet 3.3.0, mmpretrain 1.2.0, pycocotools, and this package (editable, with its test extra).
# Idempotent: each step checks what is already installed and skips itself, so a second run takes
# seconds.
#
# Environment:
#   VENV    where the environment lives (default: .venv in the repository root)
#   PYTHON  the interpreter that creates it (default: python3). If that interpreter already
#           has torch (for example a CUDA build), the venv sees it through
#           --system-site-packages and it is kept, not replaced.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
MMPRETRAIN_VERSION=1.2.0

say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    if "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
        say "creating $VENV (keeping the torch of $PYTHON via --system-site-packages)"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
else
    say "virtual environment $VENV exists"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

# Prints the installed version of a distribution, or nothing.
installed() { "$PY" - "$1" <<'PYEOF'
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
PYEOF
}

TORCHVISION_VERSION=0.28.0
torch_now="$(installed torch)"
if [ -n "$torch_now" ] && "$PY" -c 'import torch, torchvision' >/dev/null 2>&1; then
    say "torch $torch_now and torchvision $(installed torchvision) present, kept"
elif [ -n "$torch_now" ] && [ "${torch_now%+cpu}" = "$torch_now" ]; then
    # A torch that is not the +cpu wheel (e.g. a CUDA build in the interpreter): keep it and add
    # the torchvision of the same release (torchvision 0.X+15 pairs with torch 2.X).
    tv_minor=$(( $(printf '%s' "$torch_now" | cut -d. -f2) + 15 ))
    say "torch $torch_now present, kept; installing its torchvision 0.$tv_minor"
    "${PIP[@]}" "torch==${torch_now%%+*}" "torchvision==0.$tv_minor.*"
else
    # The registry's torchvision wheels are CUDA builds, which cannot load beside the +cpu torch
    # ("operator torchvision::nms does not exist"); the CUDA build of torch runs on CPU-only
    # machines, so install that one (pip would otherwise prefer the local +cpu wheel).
    say "installing torch==$TORCH_VERSION (CUDA build, runs on CPU too) and torchvision==$TORCHVISION_VERSION (about 1.4 GB)"
    "${PIP[@]}" "torch==$TORCH_VERSION,!=$TORCH_VERSION+cpu" "torchvision==$TORCHVISION_VERSION"
fi

if [ "$(installed mmcv)" = "$MMCV_VERSION" ] && "$PY" -c 'import mmcv.ops' >/dev/null 2>&1; then
    say "mmcv $MMCV_VERSION with ops present"
else
    # setuptools<70 for the build only: mmcv's setup.py imports pkg_resources. The runtime pin
    # (setuptools<81, which still ships pkg_resources for mmengine) comes with the package below.
    say "installing mmcv build tools (setuptools<70, wheel, ninja, numpy)"
    "${PIP[@]}" "setuptools<70" wheel ninja numpy
    say "building mmcv $MMCV_VERSION with its compiled ops (about 8 minutes on 2 cores; pip caches the wheel)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" "${PIP[@]}" --no-build-isolation "mmcv==$MMCV_VERSION"
fi

if [ "$(installed mmengine)" != "$MMENGINE_VERSION" ] || [ "$(installed mmdet)" != "$MMDET_VERSION" ] \
   || [ "$(installed mmpretrain)" != "$MMPRETRAIN_VERSION" ] || [ -z "$(installed pycocotools)" ]; then
    say "installing mmengine $MMENGINE_VERSION, mmdet $MMDET_VERSION, mmpretrain $MMPRETRAIN_VERSION, pycocotools"
    "${PIP[@]}" "mmengine==$MMENGINE_VERSION" "mmdet==$MMDET_VERSION" "mmpretrain==$MMPRETRAIN_VERSION" pycocotools
else
    say "mmengine $MMENGINE_VERSION, mmdet $MMDET_VERSION, mmpretrain $MMPRETRAIN_VERSION, pycocotools present"
fi

stamp="$VENV/.mmdet-maxq-installed"
want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" 2>/dev/null | cksum)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -n "$(installed mmdet-maxq)" ]; then
    say "mmdet-maxq (editable) present"
else
    say "installing mmdet-maxq in editable mode with its test extra"
    "${PIP[@]}" --no-build-isolation -e "$ROOT[tests]"
    printf '%s' "$want" > "$stamp"
fi

"$PY" -c 'import mmdet_maxq, torch, torchvision, mmcv, mmengine, mmdet, mmpretrain; print("[setup] ready: torch", torch.__version__, "torchvision", torchvision.__version__, "mmcv", mmcv.__version__, "mmengine", mmengine.__version__, "mmdet", mmdet.__version__, "mmpretrain", mmpretrain.__version__)'
