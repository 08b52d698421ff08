"""FER2013-style face crops placed into larger frames, so the whole live path can be measured.

A data-set face is a 48x48 crop; a user sends a frame. To score detector -> crop -> classifier
on faces whose labels we know, each face is upscaled and pasted into a frame, at a random size
and position, on one of three backgrounds:

* ``replicate``: the face's own border pixels stretched outwards (the detector sees no edge);
* ``blur``: large shuffled tiles of another image, blurred (an out-of-focus scene; a whole face
  scaled up and blurred is still found by RetinaFace, so it is cut up first);
* ``mosaic``: small shuffled tiles of another image (texture with edges, but no face).

The pasted square is exactly the data set's framing, so it is also the ground truth for fitting
the crop geometry (`emotion_vit.crop`). Everything is seeded: the same seed gives the same frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .detect import DetectorOptions, FaceDetector
from .track import iou

BACKGROUNDS: tuple[str, ...] = ("replicate", "blur", "mosaic")


@dataclass(frozen=True)
class FrameOptions:
    """How faces are placed: frame size, face size range (pixels), backgrounds, seed."""

    width: int = 640
    height: int = 480
    min_face: int = 112  # the pasted face's side in pixels (webcam faces at 1-3 m)
    max_face: int = 272
    backgrounds: tuple[str, ...] = BACKGROUNDS
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.backgrounds) - set(BACKGROUNDS)
        if unknown or not self.backgrounds:
            raise ValueError(f"backgrounds must be some of {BACKGROUNDS}, got {self.backgrounds}")
        if not 16 <= self.min_face <= self.max_face <= min(self.width, self.height):
            raise ValueError(f"face sides must satisfy 16 <= min_face <= max_face <= the frame's shorter side, "
                             f"got {self.min_face}..{self.max_face} in {self.width}x{self.height}")


@dataclass(frozen=True)
class PlacedFace:
    """A frame holding one data-set face, and where that face's square was pasted."""

    frame: np.ndarray  # HxWx3 uint8 RGB
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 of the pasted square: the data set's framing
    background: str


def place_face(face: np.ndarray, rng: np.random.Generator, options: FrameOptions,
               other: np.ndarray | None = None) -> PlacedFace:
    """Paste `face` (HxW or HxWx3 uint8) into a frame; `other` (any image) feeds the blur/mosaic backgrounds."""
    face = _rgb(face)
    side = int(rng.integers(options.min_face, options.max_face + 1))
    x = int(rng.integers(0, options.width - side + 1))
    y = int(rng.integers(0, options.height - side + 1))
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    background = str(rng.choice(options.backgrounds)) if other is not None else "replicate"
    if background == "replicate":
        frame = cv2.copyMakeBorder(big, y, options.height - y - side, x, options.width - x - side,
                                   cv2.BORDER_REPLICATE)
    else:
        frame = _scene(_rgb(other), background, rng, options)
        frame[y:y + side, x:x + side] = big
    return PlacedFace(frame=np.ascontiguousarray(frame), box=(float(x), float(y), float(x + side), float(y + side)),
                      background=background)


def placed_faces(faces: Sequence, options: FrameOptions) -> Iterator[PlacedFace]:
    """Each face of `faces` (images or arrays) in its own frame; backgrounds drawn from the other faces."""
    rng = np.random.default_rng(options.seed)
    for face in faces:
        other = faces[int(rng.integers(0, len(faces)))] if len(faces) > 1 else None
        yield place_face(np.asarray(face), rng, options, None if other is None else np.asarray(other))


def face_free_frame(other: np.ndarray, rng: np.random.Generator, options: FrameOptions) -> np.ndarray:
    """A frame of the blur or mosaic background made from `other`, with no face pasted: what a detector
    finds in it is a false face (the cost side of any change that makes it find more)."""
    return _scene(_rgb(np.asarray(other)), str(rng.choice(("blur", "mosaic"))), rng, options)


def detected_boxes(detector: FaceDetector, placed: Iterator[PlacedFace], options: DetectorOptions | None = None,
                   min_iou: float = 0.3) -> tuple[list[tuple], list[tuple], int]:
    """For each placed face, the detector's box that overlaps its square most: (boxes, squares, missed),
    missed counting the frames where no box overlaps it by `min_iou`. Label-free: input of `crop.fit_geometry`."""
    boxes, squares, missed = [], [], 0
    for item in placed:
        found = [face.box for face in detector.detect(item.frame, options)]
        best = max(found, key=lambda box: iou(box, item.box), default=None)
        if best is None or iou(best, item.box) < min_iou:
            missed += 1
            continue
        boxes.append(best)
        squares.append(item.box)
    return boxes, squares, missed


def _scene(other: np.ndarray, background: str, rng: np.random.Generator, options: FrameOptions) -> np.ndarray:
    if background == "blur":
        return cv2.GaussianBlur(_mosaic(other, 64, rng, options), (0, 0), sigmaX=8)
    return _mosaic(other, 16, rng, options)


def _mosaic(other: np.ndarray, tile: int, rng: np.random.Generator, options: FrameOptions) -> np.ndarray:
    """The frame tiled with the 3x3 tiles of `other` (scaled to 3 * tile px a side), in random order."""
    source = cv2.resize(other, (3 * tile, 3 * tile), interpolation=cv2.INTER_AREA if tile <= 16 else cv2.INTER_LINEAR)
    tiles = [source[r:r + tile, c:c + tile] for r in range(0, 3 * tile, tile) for c in range(0, 3 * tile, tile)]
    rows, cols = -(-options.height // tile), -(-options.width // tile)
    picks = rng.integers(0, len(tiles), size=(rows, cols))
    mosaic = np.concatenate([np.concatenate([tiles[p] for p in row], axis=1) for row in picks], axis=0)
    return np.ascontiguousarray(mosaic[:options.height, :options.width])


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]
