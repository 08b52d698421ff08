"""Follow faces from frame to frame and smooth their emotion probabilities.

Webcam frames come 5-30 times a second and a face barely moves between two of them, so a
greedy match on box overlap (IoU) is enough to keep each student's id. Per-frame predictions
flicker; an exponential moving average (EMA) per track steadies them without lagging more
than a few frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass
class Track:
    track_id: int
    box: Box
    probabilities: np.ndarray  # smoothed
    missed: int = 0  # consecutive frames without a match


@dataclass
class FaceTracker:
    """Greedy IoU matching with EMA smoothing.

    smoothing: weight of the past in the EMA (0 = no smoothing, 0.6 = a new frame counts 40%).
    min_iou: the overlap a detection needs with a track's last box to continue it.
    max_shift: without that overlap, a detection still continues a track whose centre is within
        this many box sizes: on a busy CPU only a frame or two a second is analysed, and a moving
        face can leave its old box entirely.
    max_missed: frames a track survives without a detection (a face briefly hidden keeps its id).
    """

    smoothing: float = 0.6
    min_iou: float = 0.3
    max_shift: float = 0.75
    max_missed: int = 5
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1

    def update(self, boxes: list[Box], probabilities: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Match this frame's faces to tracks; return their track ids and smoothed probabilities."""
        pairs = sorted(((self._affinity(box, track.box), i, j) for i, box in enumerate(boxes)
                        for j, track in enumerate(self.tracks)), reverse=True)
        face_to_track: dict[int, int] = {}
        taken: set[int] = set()
        for affinity, i, j in pairs:
            if affinity <= 0:
                break
            if i not in face_to_track and j not in taken:
                face_to_track[i] = j
                taken.add(j)

        ids, smoothed = [], np.empty_like(probabilities, dtype=np.float64)
        for i, box in enumerate(boxes):
            if i in face_to_track:
                track = self.tracks[face_to_track[i]]
                track.probabilities = self.smoothing * track.probabilities + (1 - self.smoothing) * probabilities[i]
                track.box, track.missed = box, 0
            else:
                track = Track(self.next_id, box, probabilities[i].astype(np.float64))
                self.next_id += 1
                self.tracks.append(track)
                taken.add(len(self.tracks) - 1)
            ids.append(track.track_id)
            smoothed[i] = track.probabilities
        for j, track in enumerate(self.tracks):
            if j not in taken:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return ids, smoothed

    def _affinity(self, box: Box, previous: Box) -> float:
        """IoU when it is at least min_iou; else a smaller positive score for a near centre; else 0."""
        overlap = iou(box, previous)
        if overlap >= self.min_iou:
            return overlap
        size = max(box[2] - box[0], box[3] - box[1], previous[2] - previous[0], previous[3] - previous[1], 1e-6)
        shift = np.hypot((box[0] + box[2] - previous[0] - previous[2]) / 2,
                         (box[1] + box[3] - previous[1] - previous[3]) / 2) / size
        return self.min_iou * (1 - shift / self.max_shift) * 0.5 if shift < self.max_shift else 0.0
