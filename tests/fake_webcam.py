"""A fake webcam for browser tests: a short YUV4MPEG2 (.y4m) video Chromium can play as its camera.

    write_fake_webcam(path)   # 640x480, 10 fps, 3 s: the astronaut's face gliding left and right

Chromium reads it with ``--use-fake-device-for-media-stream --use-file-for-fake-video-capture=PATH``
and loops it. Only numpy and OpenCV are needed (no ffmpeg): each RGB frame is converted to planar
4:2:0 (I420) with ``cv2.cvtColor`` and written after a ``FRAME`` marker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ASSETS = Path(__file__).resolve().parent / "assets"
ASTRONAUT = ASSETS / "astronaut.jpg"
# The face in astronaut.jpg (512x512) lies at about x 178..272, y 57..177; the crop keeps a margin.
ASTRONAUT_FACE_CROP = (128, 12, 322, 232)  # x1, y1, x2, y2


def write_y4m(path: str | Path, frames: Iterable[np.ndarray], fps: int = 15) -> Path:
    """Write HxWx3 uint8 RGB frames (even width and height, all the same size) as a C420 y4m."""
    path = Path(path)
    with path.open("wb") as out:
        size = None
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            height, width = frame.shape[:2]
            if size is None:
                if frame.ndim != 3 or frame.shape[2] != 3 or width % 2 or height % 2:
                    raise ValueError(f"need an RGB frame with even sides, got shape {frame.shape}")
                size = (width, height)
                out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode("ascii"))
            elif (width, height) != size:
                raise ValueError(f"frame size {width}x{height} differs from the first frame's {size[0]}x{size[1]}")
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y plane, then U, then V
        if size is None:
            raise ValueError("no frames")
    return path


def gliding_face_frames(n_frames: int, size: tuple[int, int] = (640, 480), face_width: int = 180,
                        travel: int = 200, source: str | Path = ASTRONAUT) -> Iterator[np.ndarray]:
    """The astronaut's face, scaled so the face is about `face_width` px wide, moving `travel` px
    left to right and back (so the looped video has no jump) on a plain grey-blue background,
    always fully inside the frame. Slow enough for the app's face tracker to keep one track."""
    width, height = size
    photo = np.asarray(Image.open(source).convert("RGB"))
    x1, y1, x2, y2 = ASTRONAUT_FACE_CROP
    scale = face_width / (272 - 178)
    crop = cv2.resize(photo[y1:y2, x1:x2], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ch, cw = crop.shape[:2]
    if ch > height or cw > width:
        raise ValueError(f"face crop {cw}x{ch} does not fit a {width}x{height} frame; lower face_width")
    background = np.empty((height, width, 3), np.uint8)
    background[:] = np.linspace(70, 150, height, dtype=np.uint8)[:, None, None]  # vertical gradient
    background[..., 2] = np.clip(background[..., 2].astype(int) + 40, 0, 255)
    top = (height - ch) // 2
    span = min(travel, width - cw)
    start = (width - cw - span) // 2
    for i in range(n_frames):
        phase = i / max(n_frames, 1)
        left = start + round(span * (1 - abs(1 - 2 * phase)))  # triangle wave: start -> +span -> start
        frame = background.copy()
        frame[top:top + ch, left:left + cw] = crop
        yield frame


def write_fake_webcam(path: str | Path, seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (640, 480),
                      face_width: int = 180, travel: int = 200) -> Path:
    """The test webcam: `seconds` of the gliding astronaut face at `fps`, as a y4m file
    (640x480 4:2:0 is 460 KB a frame: 3 s at 10 fps is about 14 MB)."""
    return write_y4m(path, gliding_face_frames(max(2, round(seconds * fps)), size, face_width, travel), fps)
