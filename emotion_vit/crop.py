"""Where a face crop is cut from a detector's box: one geometry for the app, evaluation and adapters.

The classifier learned FER2013's framing: a square from about the hairline to the chin. A
detector's box is a different rectangle (RetinaFace's is ~1.3 times taller than wide and sits
lower), so the crop square is placed relative to the box by three numbers, fitted label-free
by `bench/crop_geometry.py`: the detector run on FER2013 training faces pasted into frames
(`emotion_vit.frames`), each detected box compared with the pasted square. The defaults below
are that fit's medians for RetinaFace (see docs/benchmarks.md for the command and spread).

A face that is already framed like a crop (a 48x48 FER2013 image, a cropped reference photo)
is taken whole instead of being cut again: `CropGeometry.is_whole_image`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .detect import DetectorOptions, Face, FaceDetector

Box = tuple[float, float, float, float]  # x1, y1, x2, y2

# Images smaller than this (a 48x48 FER2013 crop, a thumbnail) are detected on an enlarged copy: their
# faces are below RetinaFace's smallest anchors (at 48 px it finds 28% of FER2013 faces, at 192 px 98%).
SMALL_IMAGE_SIDE = 192
# Alignment levels only the eyes' tilt beyond this. FER2013's faces are upright only roughly, and the
# training augmentation rotates them up to 12 degrees: levelling every face cost 1.6 points on upright
# faces in frames, levelling the tilt beyond 6 degrees 0.4, while it wins back 2.2 of the 4.4 points
# that tilts of up to 25 degrees cost (bench/tilt.py, docs/benchmarks.md).
KEPT_TILT_DEGREES = 6.0
# Off by default: on upright faces alignment costs 0.4 points (PublicTest faces in frames, bench/frames.py),
# on faces tilted up to 25 degrees it wins 2.2 (bench/tilt.py).
ALIGN_FACES = False


@dataclass(frozen=True)
class CropGeometry:
    """The crop square for a box of width w and height h, with box size s = sqrt(w * h):
    side = scale * s, centre = box centre + (shift_x, shift_y) * s."""

    scale: float = 1.112
    shift_x: float = -0.004
    shift_y: float = -0.012

    def square(self, box: Box) -> Box:
        """The crop square (x1, y1, x2, y2) for a detector box; it may extend past the frame."""
        x1, y1, x2, y2 = box
        size = math.sqrt(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))
        cx, cy = (x1 + x2) / 2 + self.shift_x * size, (y1 + y2) / 2 + self.shift_y * size
        half = self.scale * size / 2
        return cx - half, cy - half, cx + half, cy + half

    def crop(self, frame: np.ndarray, box: Box, landmarks: np.ndarray | None = None) -> np.ndarray:
        """The face cut out of `frame`: the square for `box`, outside the frame filled by replicating its
        border. With `landmarks` (5 points, eyes first), rotated about the square's centre so that the eyes'
        tilt is at most KEPT_TILT_DEGREES."""
        x1, y1, x2, y2 = self.square(box)
        center = ((x1 + x2) / 2, (y1 + y2) / 2)
        angle = 0.0
        if landmarks is not None:
            (rx, ry), (lx, ly) = landmarks[0], landmarks[1]  # the subject's right eye is on the image left
            angle = math.degrees(math.atan2(ly - ry, lx - rx))
            angle -= max(-KEPT_TILT_DEGREES, min(KEPT_TILT_DEGREES, angle))  # a tilt the model knows is kept
        size = max(int(round(x2 - x1)), 1)
        # One affine warp does rotation and cropping; the output keeps the face's own resolution.
        matrix = cv2.getRotationMatrix2D(center, angle, 1.0)
        matrix[:, 2] += (size / 2 - center[0], size / 2 - center[1])
        return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def face_crop(self, frame: np.ndarray, face: Face, align: bool = ALIGN_FACES) -> np.ndarray:
        """What the classifier sees of `face`: the whole image when it is already a face crop, else `crop`."""
        height, width = frame.shape[:2]
        if self.is_whole_image(face.box, height, width):
            return frame
        return self.crop(frame, face.box, face.landmarks if align else None)

    def is_whole_image(self, box: Box, height: int, width: int) -> bool:
        """True when the crop for `box` would be (nearly) the whole image: the image is itself a face crop,
        and cutting it again would only shift its framing and pad it with replicated borders."""
        x1, y1, x2, y2 = self.square(box)
        covered = max(0.0, min(x2, width) - max(x1, 0.0)) * max(0.0, min(y2, height) - max(y1, 0.0))
        return covered >= 0.8 * height * width and (x2 - x1) >= 0.9 * max(height, width)


def find_faces(detector: FaceDetector, frame: np.ndarray, options: DetectorOptions | None = None) -> list[Face]:
    """The detector's faces in `frame` (HxWx3 uint8), largest first, with small images enlarged for detection."""
    options = options or detector.options
    height, width = frame.shape[:2]
    if max(height, width) < SMALL_IMAGE_SIDE:
        options = dataclasses.replace(options, upscale=max(options.upscale, SMALL_IMAGE_SIDE / max(height, width)),
                                      max_side=None)
    return detector.detect(frame, options)


@dataclass(frozen=True)
class GeometryFit:
    """A fitted geometry and how far single faces stray from it (the detector's jitter against the
    data set's framing): percentiles 10, 25, 50, 75, 90 of each per-face ratio."""

    geometry: CropGeometry
    faces: int
    scale_percentiles: tuple[float, ...]
    shift_x_percentiles: tuple[float, ...]
    shift_y_percentiles: tuple[float, ...]
    samples: np.ndarray  # (faces, 3): each face's scale, shift_x, shift_y (what `DetectorFraming` replays)

    def to_dict(self) -> dict:
        return {"scale": self.geometry.scale, "shift_x": self.geometry.shift_x, "shift_y": self.geometry.shift_y,
                "faces": self.faces, "percentiles": [10, 25, 50, 75, 90],
                "scale_percentiles": list(self.scale_percentiles),
                "shift_x_percentiles": list(self.shift_x_percentiles),
                "shift_y_percentiles": list(self.shift_y_percentiles)}


def fit_geometry(boxes: list[Box], squares: list[Box]) -> GeometryFit:
    """Fit `CropGeometry` from detector boxes and the true crop squares of the same faces (medians:
    robust to the odd box that caught a forehead or a chin only)."""
    if len(boxes) != len(squares) or not boxes:
        raise ValueError(f"need as many boxes as squares, and at least one (got {len(boxes)} and {len(squares)})")
    b, t = np.asarray(boxes, dtype=float), np.asarray(squares, dtype=float)
    size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    if (size <= 0).any():
        raise ValueError("every box needs a positive width and height")
    scale = (t[:, 2] - t[:, 0]) / size
    shift_x = ((t[:, 0] + t[:, 2]) - (b[:, 0] + b[:, 2])) / 2 / size
    shift_y = ((t[:, 1] + t[:, 3]) - (b[:, 1] + b[:, 3])) / 2 / size

    def percentiles(values: np.ndarray) -> tuple[float, ...]:
        return tuple(round(float(v), 4) for v in np.percentile(values, [10, 25, 50, 75, 90]))

    geometry = CropGeometry(*(round(float(np.median(v)), 3) for v in (scale, shift_x, shift_y)))
    return GeometryFit(geometry, len(b), percentiles(scale), percentiles(shift_x), percentiles(shift_y),
                       np.stack([scale, shift_x, shift_y], axis=1))
