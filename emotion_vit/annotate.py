"""Draw each face's box, emotion and confidence onto a copy of the frame, with text readable at any face size."""

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
TEXT_HEIGHT_PER_SCALE = 22  # pixels of capital height per unit of Hershey font scale
# Labels added by adapters get a stable colour of their own.
_EXTRA_COLORS = [(42, 161, 152), (203, 75, 22), (0, 150, 80), (150, 90, 30), (90, 60, 170)]


def emotion_color(label: str) -> tuple[int, int, int]:
    return EMOTION_COLORS.get(label, _EXTRA_COLORS[zlib.crc32(label.encode()) % len(_EXTRA_COLORS)])


def face_ids(faces: list[FaceEmotion]) -> list[str]:
    """What each face is called in the picture and the tables: its track (#id) live, its number in a photo."""
    return [f"#{face.track_id}" if face.track_id is not None else f"#{number}"
            for number, face in enumerate(faces, start=1)]


def draw_faces(frame: np.ndarray, faces: list[FaceEmotion], max_side: int | None = 1920) -> np.ndarray:
    """An annotated copy of `frame` (RGB uint8), shrunk to `max_side` for display if larger; each face
    labelled with its id (`face_ids`), emotion and confidence."""
    scale = 1.0
    if max_side and max(frame.shape[:2]) > max_side:
        scale = max_side / max(frame.shape[:2])
        canvas = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    else:
        canvas = frame.copy()
    # Text at least ~1.5% of the picture's longer side (and 12 px): still readable when a large photo
    # is shown shrunk in the page, whatever the face's size; larger faces get larger text. Where the
    # full label would spread far beyond a small face (a crowd), it shortens to "#id emotion", then
    # "#id": the box's colour still tells the emotion and the table has the rest.
    min_scale = max(12.0, 0.015 * max(canvas.shape[:2])) / TEXT_HEIGHT_PER_SCALE
    for face, face_id in zip(faces, face_ids(faces)):
        x1, y1, x2, y2 = (int(round(v * scale)) for v in face.box)
        color = emotion_color(face.label)
        thickness = max(1, round((x2 - x1) / 60))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        font_scale = max(min_scale, min((x2 - x1) / 160, 1.0))
        weight = max(1, round(font_scale * 1.5))
        for text in (f"{face_id} {face.label} {face.probabilities[face.label]:.0%}", f"{face_id} {face.label}",
                     face_id):
            (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, weight)
            if text_w <= 2 * (x2 - x1):
                break
        pad = max(2, text_h // 5)
        box_h = text_h + baseline + 2 * pad
        top = y1 - box_h if y1 - box_h >= 0 else min(y2, canvas.shape[0] - box_h)  # above the box, else below
        left = min(max(x1, 0), max(canvas.shape[1] - text_w - 2 * pad, 0))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2 * pad, top + box_h), color, cv2.FILLED)
        cv2.putText(canvas, text, (left + pad, top + pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), weight, cv2.LINE_AA)
    return canvas
