"""Reference faces: `folder/<label>/*` images (or uploads), each cut as the live view cuts it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

from ..crop import ALIGN_FACES, CropGeometry, find_faces
from ..detect import FaceDetector
from ..images import IMAGE_SUFFIXES, as_rgb_uint8, read_image
from ..labels import UnknownLabelError, canonical_label
from .options import AdaptError

# A reference no larger than this (both sides, pixels) is a face crop already (FER2013's and CK+'s 48 px faces, a
# face thumbnail): it is taken whole without detection, which misses 2% of FER2013's faces even on an enlarged copy.
FACE_CROP_MAX_SIDE = 96


@dataclass
class References:
    """Face crops with their labels, and the files that gave no face."""

    crops: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason"

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.labels))

    def copy(self) -> References:
        """A snapshot: its own lists (the crops themselves shared), which later additions leave as they are."""
        return References(*(list(getattr(self, column.name)) for column in fields(self)))

    def add_image(self, image, label: str, source: str, detector: FaceDetector | None,
                  geometry: CropGeometry | None = None, align: bool = ALIGN_FACES, max_side: int | None = None) -> bool:
        """Add the largest face of `image` (any RGB/gray array) under `label`, cut as the live view cuts it
        (`align` as the app's setting). Without a detector, or no larger than FACE_CROP_MAX_SIDE, the image is
        taken whole as a face crop. A crop larger than `max_side` is kept reduced to it (area interpolation,
        as the model's preprocessing reduces it further). Returns False, and notes why, when there is no face."""
        if detector is None or max(np.shape(image)[:2]) <= FACE_CROP_MAX_SIDE:
            crop = image
        else:
            image = as_rgb_uint8(image)
            faces = find_faces(detector, image)
            if not faces:
                self.skipped.append(f"{source}: no face found")
                return False
            crop = (geometry or CropGeometry()).face_crop(image, faces[0], align)
        if max_side and max(np.shape(crop)[:2]) > max_side:
            height, width = np.shape(crop)[:2]
            scale = max_side / max(height, width)
            crop = cv2.resize(np.ascontiguousarray(crop), (max(1, round(width * scale)), max(1, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
        self.crops.append(crop)
        self.labels.append(label_name(label))
        self.sources.append(source)
        return True


MAX_LABEL_LENGTH = 32  # a label is drawn on the video and kept in every session's memory


def label_name(folder: str) -> str:
    """A folder's label: a known emotion in its canonical spelling, else a new label (lower-case)."""
    try:
        return canonical_label(folder)
    except UnknownLabelError:
        name = re.sub(r"[^a-z0-9_-]+", "_", folder.strip().lower()).strip("_")
        if not name or len(name) > MAX_LABEL_LENGTH:
            raise AdaptError(f"label {folder[:40]!r}: 1-{MAX_LABEL_LENGTH} letters, digits, '_' or '-'") from None
        return name

def load_references(folder: str | Path, detector: FaceDetector | None,
                    geometry: CropGeometry | None = None, align: bool = ALIGN_FACES) -> References:
    """Read `folder/<label>/*` images and crop the largest face of each (no detector: images are crops)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdaptError(f"references folder not found: {folder}")
    refs = References()
    label_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_dirs:
        raise AdaptError(f"{folder}: no label folders (expected {folder}/<label>/<images>)")
    for label_dir in label_dirs:
        for path in sorted(p for p in label_dir.rglob("*") if p.is_file()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                refs.skipped.append(f"{path}: not an image file")
                continue
            try:
                refs.add_image(read_image(path), label_dir.name, str(path), detector, geometry, align)
            except ValueError as error:
                refs.skipped.append(f"{path}: {error}")
    if not refs.crops:
        details = "; ".join(refs.skipped[:5]) or "the label folders are empty"
        raise AdaptError(f"{folder}: no usable reference face ({details})")
    empty = [d for d in label_dirs if label_name(d.name) not in refs.labels]
    if empty:  # a label left out silently would make an adapter that never learned it
        why = "; ".join(s for s in refs.skipped if any(s.startswith(str(d)) for d in empty)) or "no images"
        raise AdaptError(f"{folder}: no usable reference face for {', '.join(d.name for d in empty)} ({why}); "
                         "for photos that are already face crops, use --already-cropped")
    return refs
