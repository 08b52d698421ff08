# emotion_vit: the Gradio app and its /analyze API on CPU, with the embedded model.
#
#   docker build -t emotion-vit .
#   docker run -p 7860:7860 emotion-vit            # then open http://localhost:7860
#
# Build arguments:
#   BASE_IMAGE       any Debian-based image with Python 3.11 and the venv module (default python:3.11-slim);
#                    pin it by digest for reproducible builds: --build-arg BASE_IMAGE=python:3.11-slim@sha256:...
#   TORCH_INDEX_URL  where the CPU torch wheel comes from (default: PyTorch's CPU wheel index).
#                    Empty: torch-2.13.0+cpu must lie in ./wheels/ (offline builds; deploy/check_container.sh).
#   PIP_EXTRA_ARGS   more pip options for every install (a mirror, --cert, ...).
# torch is installed first, pinned as 2.13.0+cpu: no PyPI release carries the +cpu label, so the
# build can never fall back to PyPI's multi-GB CUDA torch; requirements-app.txt's torch==2.13.0 is then
# already satisfied.
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the virtual environment (a venv works on python:3.11-slim and on Debian's own python3,
# whose system pip refuses global installs, PEP 668). Optional local wheels (./wheels/*.whl, ignored
# by git) serve offline builds; they stay in this stage, out of the final image.
FROM ${BASE_IMAGE} AS venv
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_EXTRA_ARGS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements-app.txt wheel[s] /tmp/wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install $PIP_EXTRA_ARGS --find-links /tmp/wheels \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0+cpu" \
    && /opt/venv/bin/pip install $PIP_EXTRA_ARGS --find-links /tmp/wheels -r /tmp/wheels/requirements-app.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -c "import torch; assert torch.version.cuda is None, 'not the CPU torch'; print('torch', torch.__version__)"

# Stage 2: the app.
FROM ${BASE_IMAGE}
# OpenCV (opencv-python and -headless are both installed by the requirements) needs libGL and GLib;
# tini is PID 1: it forwards SIGTERM to the app (Python as PID 1 ignores it) and reaps children.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgl1 libglib2.0-0 tini \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=venv /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1

# A non-root user with uid 1000 (the Hugging Face Spaces convention). The code and the model belong to
# root and are read-only for it: the app writes only Gradio's temp folder and the adapters folder
# (mount a volume there to keep adapters across restarts and share them between replicas).
RUN useradd --create-home --uid 1000 --shell /bin/bash user
WORKDIR /home/user/app
COPY app.py train.py ./
COPY deploy/healthcheck.py deploy/
COPY emotion_vit/ emotion_vit/
COPY configs/ configs/
COPY models/emotion-vit-fer2013/ models/emotion-vit-fer2013/
RUN mkdir -p /home/user/app/adapters /tmp/gradio && chown user:user /home/user/app/adapters /tmp/gradio \
    && chmod -R a-w,a+rX app.py train.py deploy emotion_vit configs models
USER user

# The embedded model is a local folder: nothing is downloaded at start-up (no analytics, no hub, no
# albumentations version check). To serve a hub model instead, run with
# -e EMOTION_VIT_MODEL=user/name -e HF_HUB_OFFLINE=0.
ENV HOME=/home/user \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    GRADIO_TEMP_DIR=/tmp/gradio \
    EMOTION_VIT_ADAPTERS=/home/user/app/adapters \
    PYTHONDONTWRITEBYTECODE=1

EXPOSE 7860
# Healthy = the model answers a forward pass (the /health API), not merely the web server.
HEALTHCHECK --interval=30s --timeout=15s --start-period=120s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "app.py"]
