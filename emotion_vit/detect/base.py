"""The detector interface: `Face` results, `DetectorOptions`, and the `FaceDetector` base class.

A backend implements `_detect_resized` on an image already scaled for detection; `detect` does the
scaling, maps boxes and landmarks back to the frame's pixels, filters small faces and sorts them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..images import as_rgb_uint8

# Detection never runs on more than this many pixels along the longer side, whatever the options
# say: a 10000x10000 frame would otherwise need tens of GB of activations. Boxes are mapped back.
MAX_DETECTION_SIDE = 4096
# Below this (after resizing) no backend can place even its smallest anchor (16 px).
MIN_DETECTION_SIDE = 16
# Highest-scoring candidates kept before NMS; only matters for very low thresholds.
MAX_CANDIDATES = 5000


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the frame passed to `FaceDetector.detect`."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2, clipped to the frame
    score: float  # detector confidence, 0..1
    # (5, 2) float32 x, y: right eye, left eye, nose tip, right mouth corner, left mouth corner, where
    # "right" is the subject's right (image left). Not clipped: a face at the border may have points outside.
    landmarks: np.ndarray | None = field(default=None, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return self.width * self.height

@dataclass
class DetectorOptions:
    """What to detect and at which scale. Detectors read these on every call, so edits take effect at once."""

    score_threshold: float = 0.6  # see the module docstring for the measurements behind 0.6
    min_face_size: int = 20  # drop faces whose shorter box side, in ORIGINAL frame pixels, is smaller
    upscale: float = 1.0  # >1 enlarges the frame before detection to find small faces (e.g. 2.0 for group photos)
    max_side: int | None = None  # downscale frames whose longer side exceeds this before detection (speed)
    nms_threshold: float = 0.4  # IoU above which the lower-scoring of two boxes is dropped

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        if self.min_face_size < 0:
            raise ValueError(f"min_face_size must be >= 0, got {self.min_face_size}")
        if not self.upscale > 0:
            raise ValueError(f"upscale must be > 0, got {self.upscale}")
        if self.max_side is not None and self.max_side < MIN_DETECTION_SIDE:
            raise ValueError(f"max_side must be None or >= {MIN_DETECTION_SIDE}, got {self.max_side}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must lie in (0, 1], got {self.nms_threshold}")

    def detection_scale(self, height: int, width: int) -> float:
        """Factor from frame to detector input: `upscale`, reduced to respect `max_side` and the safety cap."""
        longest_allowed = MAX_DETECTION_SIDE if self.max_side is None else min(self.max_side, MAX_DETECTION_SIDE)
        longer_side = max(height, width)
        return min(self.upscale, longest_allowed / longer_side)

class FaceDetector(ABC):
    """A face detector: `detect(frame)` -> faces, largest first. Backends implement `_detect_resized`."""

    name: str

    def __init__(self, options: DetectorOptions | None = None) -> None:
        self.options = options if options is not None else DetectorOptions()

    def detect(self, frame: np.ndarray, options: DetectorOptions | None = None) -> list[Face]:
        """Faces in `frame` (HxWx3 uint8 RGB; anything `as_rgb_uint8` accepts), sorted by area, largest first.

        `options` overrides the detector's own for this call (per-user settings on a shared detector).
        """
        image = as_rgb_uint8(frame)
        options = options or self.options
        height, width = image.shape[:2]
        if min(height, width) < options.min_face_size:
            return []  # no box inside this frame could pass the size filter

        scale = options.detection_scale(height, width)
        resized_width, resized_height = max(1, round(width * scale)), max(1, round(height * scale))
        if min(resized_width, resized_height) < MIN_DETECTION_SIDE:
            return []
        if (resized_width, resized_height) != (width, height):
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (resized_width, resized_height), interpolation=interpolation)

        boxes, scores, landmarks = self._detect_resized(image, options)

        # Back to frame coordinates; per-axis factors because rounding made the two scales differ slightly.
        to_frame = np.array([width / resized_width, height / resized_height], dtype=np.float32)
        boxes = boxes.reshape(-1, 2, 2) * to_frame
        boxes[:, :, 0] = boxes[:, :, 0].clip(0, width)
        boxes[:, :, 1] = boxes[:, :, 1].clip(0, height)
        boxes = boxes.reshape(-1, 4)
        if landmarks is not None:
            landmarks = landmarks * to_frame

        faces = []
        smallest_side = max(options.min_face_size, 1e-6)  # even with min_face_size=0, drop boxes clipped to nothing
        for index, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            if min(x2 - x1, y2 - y1) < smallest_side:
                continue
            points = None
            if landmarks is not None:
                points = landmarks[index].astype(np.float32)
                points.setflags(write=False)  # Face is frozen; keep its landmarks so too
            faces.append(Face(box=(x1, y1, x2, y2), score=float(scores[index]), landmarks=points))
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces

    @abstractmethod
    def _detect_resized(
        self, image: np.ndarray, options: DetectorOptions
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Detect in an already resized HxWx3 uint8 RGB image.

        Returns boxes (N, 4) x1, y1, x2, y2; scores (N,); landmarks (N, 5, 2) or None; all in `image`'s
        pixels, already filtered by `options.score_threshold` and NMS'd with `options.nms_threshold`.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, options={self.options!r})"

def empty_detections() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)

def default_num_threads() -> int:
    """Threads per detector: two at most, so detection leaves cores for the emotion model and the app."""
    return min(2, os.cpu_count() or 1)
