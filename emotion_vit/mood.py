"""The class's mood over time: each emotion's share of the faces, over the last minutes."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class MoodTimeline:
    """Per analysed frame, how many faces showed each emotion; kept for `window_s` seconds."""

    labels: list[str]
    window_s: float = 300.0
    points: int = 60  # time bins in the plot, whatever the window
    frames: deque = field(default_factory=deque)  # (timestamp, Counter of labels)

    def add(self, face_labels: list[str], timestamp: float | None = None) -> None:
        if not face_labels:
            return  # no face, no mood: an empty room does not look "neutral"
        now = time.time() if timestamp is None else timestamp
        self.frames.append((now, Counter(face_labels)))
        while self.frames and self.frames[0][0] < now - self.window_s:
            self.frames.popleft()

    def table(self) -> pd.DataFrame:
        """Long format for a line plot: time, emotion, share (0-1) of the faces in each time bin."""
        columns = ["time", "emotion", "share"]
        if not self.frames:
            return pd.DataFrame(columns=columns)
        start = self.frames[0][0]
        bin_s = max(1.0, self.window_s / self.points)
        bins: dict[int, Counter] = {}
        for timestamp, counts in self.frames:
            bins.setdefault(int((timestamp - start) // bin_s), Counter()).update(counts)
        rows = []
        for index, counts in sorted(bins.items()):
            total = sum(counts.values())
            when = pd.Timestamp(start + index * bin_s, unit="s", tz="UTC").tz_localize(None)
            rows += [(when, label, counts.get(label, 0) / total) for label in self.labels]
        return pd.DataFrame(rows, columns=columns)
