"""Frame in, faces with emotions out.

    frame (any size, RGB) -> detector -> face crops (the fitted crop geometry, optional eye alignment;
      for photos also a tighter and a looser crop) -> the training preprocessing -> ONE batched
      forward for all faces -> label + probabilities (averaged over a face's crops)
      -> (optional) tracking across frames with smoothed probabilities

The pipeline holds the model and the detector (loaded once) and no per-user state: a
`FaceTracker` per video stream is passed to `analyze`, so one pipeline serves every session.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .crop import ALIGN_FACES, CropGeometry, find_faces
from .detect import DetectorOptions, Face, FaceDetector, as_rgb_uint8
from .model import EmotionModel
from .track import FaceTracker


@dataclass
class FaceEmotion:
    """One face in a frame: where it is, what it shows, and which track it belongs to."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float  # detector confidence
    label: str
    probabilities: dict[str, float]
    track_id: int | None = None
    landmarks: list[list[float]] | None = None

    def to_dict(self) -> dict:
        return {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4), "label": self.label,
                "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
                "track_id": self.track_id, "landmarks": self.landmarks}


@dataclass
class FrameAnalysis:
    faces: list[FaceEmotion]
    timings_ms: dict[str, float]
    width: int
    height: int
    faces_not_classified: int = 0  # smaller faces beyond PipelineOptions.max_faces

    @property
    def largest(self) -> FaceEmotion | None:
        return self.faces[0] if self.faces else None  # the detector sorts faces largest first


@dataclass
class PipelineOptions:
    geometry: CropGeometry = field(default_factory=CropGeometry)  # how a crop is cut from a detector's box
    align: bool = ALIGN_FACES  # rotate tilted crops upright (uses the 5 landmarks)
    crop_spread: float = 0.0  # >0: also crops (1 -+ spread) times as large, probabilities averaged
    batched: bool = True  # False classifies faces one by one (for benchmarks)
    max_faces: int | None = None  # classify only this many, the largest (bounds the work one image can ask for)


# Crops per forward pass: one pass for a class of 40 faces with three crop sizes, and a bounded peak of
# memory for a photo of hundreds (each crop and its mirror hold about half a megabyte of activations).
CLASSIFY_BATCH = 120


@dataclass
class EmotionPipeline:
    model: EmotionModel
    detector: FaceDetector
    options: PipelineOptions = field(default_factory=PipelineOptions)

    def analyze(self, frame, tracker: FaceTracker | None = None,
                detector_options: DetectorOptions | None = None) -> FrameAnalysis:
        """Detect and classify every face in `frame`; with a tracker, ids and smoothed probabilities.

        `detector_options` override the detector's own for this frame (per-user thresholds).
        """
        start = time.perf_counter()
        frame = as_rgb_uint8(frame)
        faces = find_faces(self.detector, frame, detector_options)
        limit = self.options.max_faces
        faces, not_classified = (faces[:limit], len(faces) - limit) if limit and len(faces) > limit else (faces, 0)
        detected = time.perf_counter()
        views = [self.crops(frame, face) for face in faces]
        probabilities = self.classify([crop for crops in views for crop in crops])
        if any(len(crops) > 1 for crops in views):
            ends = np.cumsum([len(crops) for crops in views])
            probabilities = np.stack([part.mean(0) for part in np.split(probabilities, ends[:-1])])
        classified = time.perf_counter()
        track_ids: list[int | None] = [None] * len(faces)
        if tracker is not None:
            track_ids, probabilities = tracker.update([face.box for face in faces], probabilities)
        results = [self._result(face, p, track_id) for face, p, track_id in zip(faces, probabilities, track_ids)]
        timings = {"detect": (detected - start) * 1e3, "classify": (classified - detected) * 1e3,
                   "total": (time.perf_counter() - start) * 1e3}
        return FrameAnalysis(results, {k: round(v, 2) for k, v in timings.items()}, frame.shape[1], frame.shape[0],
                             not_classified)

    def crops(self, frame: np.ndarray, face: Face) -> list[np.ndarray]:
        """What is classified of `face`: its crop, and with `crop_spread` a tighter and a looser one too
        (the detector's box varies around FER2013's framing by about +-8%: averaging covers it)."""
        geometry, spread, align = self.options.geometry, self.options.crop_spread, self.options.align
        if not spread or geometry.is_whole_image(face.box, *frame.shape[:2]):  # a crop already: as it is
            return [geometry.face_crop(frame, face, align)]
        return [dataclasses.replace(geometry, scale=geometry.scale * factor).crop(
            frame, face.box, face.landmarks if align else None) for factor in (1 - spread, 1.0, 1 + spread)]

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        """Probabilities (N, num_labels) for N crops: a forward pass per CLASSIFY_BATCH of them."""
        if not crops:
            return np.empty((0, len(self.model.labels)))
        batch = CLASSIFY_BATCH if self.options.batched else 1
        return np.concatenate([self.model.predict_proba(crops[i:i + batch]).numpy()
                               for i in range(0, len(crops), batch)])

    def _result(self, face: Face, probabilities: np.ndarray, track_id: int | None) -> FaceEmotion:
        labels = self.model.labels
        return FaceEmotion(
            box=face.box,
            score=face.score,
            label=labels[int(np.argmax(probabilities))],
            probabilities={name: float(p) for name, p in zip(labels, probabilities)},
            track_id=track_id,
            landmarks=np.round(face.landmarks.astype(float), 1).tolist() if face.landmarks is not None else None,
        )


def set_inference_threads(threads: int | None = None) -> int:
    """Use the physical cores for the classifier (2 here); more threads than cores only adds contention.
    OMP_NUM_THREADS, where set, is the default: a process sharing the CPU (a benchmark beside a training
    job) keeps to its share."""
    import os
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2" sets nested levels: the first
    threads = threads or (int(omp) if omp.isdigit() else 0) or max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    return threads
