#!/usr/bin/env bash
# Makes the models the demo policy and the ML tests use, once, and links
# them into DIR (default <repo>/models):
#   pattern.pt, watermark.pt  demo CNNs trained on generated images
#                             (scripts/ml/demo_models.py, under a minute on CPU)
#   nudenet.pt                NudeNet's 320n detector converted to TorchScript
#                             (scripts/ml/convert_nudenet.py)
# Each comes with its declaration (demo-models.json, nudenet.pt.json).
# They are cached in ~/.cache/picsift/models/<tag> (PICSIFT_MODEL_CACHE);
# running it again is a quick no-op. Bump TAG when the scripts change.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$REPO/models}
TAG=v2
# shellcheck source=scripts/torch-env.sh
source "$REPO/scripts/torch-env.sh"
CACHE=${PICSIFT_MODEL_CACHE:-$HOME/.cache/picsift/models/$TAG}

# Extra Python packages, into the torch virtualenv, only when missing.
# nudenet comes without its dependencies (opencv, onnxruntime): only its
# bundled ONNX file is used.
# torch is pinned on the same line: onnx2torch needs torchvision, and an
# unpinned torchvision drags torch up to a version tch was not built for.
python - <<'PY' || pip install -q --no-cache-dir --disable-pip-version-check numpy pillow onnx onnx2torch "torch==$TORCH_VERSION"
import numpy, PIL, onnx, onnx2torch  # noqa: F401
PY
python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('nudenet') is None)" \
    || pip install -q --no-cache-dir --disable-pip-version-check --no-deps nudenet==3.4.2

mkdir -p "$CACHE"
if [[ ! -f $CACHE/demo-models.json ]]; then
    echo "models: training the demo models (once)" >&2
    rm -rf "$CACHE/demo.tmp"
    python "$REPO/scripts/ml/demo_models.py" --out "$CACHE/demo.tmp" --corpus "$REPO/tests/data/pdq"
    mv "$CACHE/demo.tmp"/* "$CACHE/" && rmdir "$CACHE/demo.tmp"
fi
# Traced where it will run: a CPU trace does not run on a GPU.
DEVICE=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null)
if ! grep -q "traced on $DEVICE" "$CACHE/nudenet.pt.json" 2>/dev/null; then
    echo "models: converting NudeNet 320n to TorchScript on $DEVICE (once)" >&2
    python "$REPO/scripts/ml/convert_nudenet.py" --out "$CACHE/nudenet.pt.tmp" --device "$DEVICE" 2>/dev/null
    mv "$CACHE/nudenet.pt.tmp" "$CACHE/nudenet.pt"
    sed 's/"nudenet.pt.tmp"/"nudenet.pt"/' "$CACHE/nudenet.pt.tmp.json" > "$CACHE/nudenet.pt.json"
    rm "$CACHE/nudenet.pt.tmp.json"
fi

mkdir -p "$DIR"
for f in "$CACHE"/*; do
    ln -sfn "$f" "$DIR/$(basename "$f")"
done
for f in pattern.pt watermark.pt nudenet.pt; do
    [[ -f $DIR/$f ]] || { echo "models: $DIR/$f is missing" >&2; exit 1; }
    echo "models: $DIR/$f"
done
