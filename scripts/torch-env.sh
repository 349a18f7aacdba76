# Sourced by the build and test scripts: makes libtorch (from the PyPI torch
# wheel, as tch 0.26 expects: torch 2.13.0) available to cargo and to the
# binaries it builds. Installs it into a virtualenv shared by every clone
# (PICSIFT_TORCH_VENV, default ~/.cache/picsift/torch-2.13.0) when missing
# — a 2.6 GB download, about a minute — and reuses it when present.
TORCH_VERSION=2.13.0
PICSIFT_TORCH_VENV=${PICSIFT_TORCH_VENV:-$HOME/.cache/picsift/torch-$TORCH_VERSION}
if ! "$PICSIFT_TORCH_VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    echo "setup: installing torch==$TORCH_VERSION into $PICSIFT_TORCH_VENV (libtorch for tch; once, about a minute)" >&2
    python3 -m venv "$PICSIFT_TORCH_VENV"
    # --no-cache-dir: the wheels (about 3 GB) are not kept twice on disk.
    "$PICSIFT_TORCH_VENV/bin/pip" install -q --no-cache-dir --disable-pip-version-check "torch==$TORCH_VERSION"
fi
export PICSIFT_TORCH_VENV
export LIBTORCH_USE_PYTORCH=1
# torch-sys runs `python` from PATH, in a virtualenv, to find the headers
# and libraries.
export VIRTUAL_ENV="$PICSIFT_TORCH_VENV"
export PATH="$PICSIFT_TORCH_VENV/bin:$PATH"
PICSIFT_TORCH_LIB=$(python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export PICSIFT_TORCH_LIB
export LD_LIBRARY_PATH="$PICSIFT_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
