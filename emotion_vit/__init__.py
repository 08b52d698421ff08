"""emotion_vit: live, few-shot face-emotion recognition with a Vision Transformer."""

import os

# albumentations looks up its newest version online at import; the app and training run offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
