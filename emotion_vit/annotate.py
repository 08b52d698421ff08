"""Draw each face's box, emotion and confidence onto a copy of the frame."""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from .pipeline import FaceEmotion

# One colour per emotion (RGB), readable on light and dark backgrounds.
EMOTION_COLORS = {
    "angry": (220, 50, 47), "disgust": (133, 153, 0), "fear": (108, 113, 196), "happy": (240, 180, 0),
    "sad": (38, 139, 210), "surprise": (211, 54, 130), "neutral": (150, 150, 150),
}
# Labels added by adapters get a stable colour of their own.
_EXTRA_COLORS = [(42, 161, 152), (203, 75, 22), (0, 150, 80), (150, 90, 30), (90, 60, 170)]


def emotion_color(label: str) -> tuple[int, int, int]:
    return EMOTION_COLORS.get(label, _EXTRA_COLORS[zlib.crc32(label.encode()) % len(_EXTRA_COLORS)])


def draw_faces(frame: np.ndarray, faces: list[FaceEmotion], max_side: int | None = 1920) -> np.ndarray:
    """An annotated copy of `frame` (RGB uint8), shrunk to `max_side` for display if larger."""
    scale = 1.0
    if max_side and max(frame.shape[:2]) > max_side:
        scale = max_side / max(frame.shape[:2])
        canvas = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    else:
        canvas = frame.copy()
    for face in faces:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in face.box)
        color = emotion_color(face.label)
        thickness = max(1, round((x2 - x1) / 60))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        text = f"{face.label} {face.probabilities[face.label]:.0%}"
        if face.track_id is not None:
            text = f"#{face.track_id} {text}"
        font_scale = float(np.clip((x2 - x1) / 160, 0.35, 1.0))
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - text_h - baseline - 4 if y1 - text_h - baseline - 4 >= 0 else y2  # above the box, else below
        cv2.rectangle(canvas, (x1, top), (x1 + text_w + 4, top + text_h + baseline + 4), color, cv2.FILLED)
        cv2.putText(canvas, text, (x1 + 2, top + text_h + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return canvas
