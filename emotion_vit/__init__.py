"""emotion_vit: live, few-shot face-emotion recognition with a Vision Transformer."""

import os

# albumentations looks up its newest version online at import, and Gradio reports usage analytics by
# default: the app and training run offline and send nothing (set the variables to opt back in).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__version__ = "0.3.0"
