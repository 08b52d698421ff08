"""The class's mood over time: each emotion's share of the faces, per second of the session.

Only counts are kept (how many faces showed each emotion, per second): never a face or a frame.
The live plot shows the last minutes; the session report covers the whole session.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

COLUMNS = ["seconds", "emotion", "share"]


@dataclass
class MoodTimeline:
    """Per second of the session, how many faces showed each emotion, for up to `history_s` seconds."""

    labels: list[str]
    history_s: float = 4 * 3600.0  # a school day's lesson fits; older seconds are dropped
    started: float | None = None  # wall-clock time of the first face
    seconds: dict[int, Counter] = field(default_factory=dict)  # second since `started` -> label counts

    def add(self, face_labels: list[str], timestamp: float | None = None) -> None:
        if not face_labels:
            return  # no face, no mood: an empty room does not look "neutral"
        now = time.time() if timestamp is None else timestamp
        if self.started is None:
            self.started = now
        second = int(now - self.started)
        self.seconds.setdefault(second, Counter()).update(face_labels)
        # Seconds are added in time order, so the oldest are first: drop them without scanning the rest
        # (this runs on every live frame, and a session may hold hours of seconds).
        while (oldest := next(iter(self.seconds))) < second - self.history_s:
            del self.seconds[oldest]

    def table(self, window_s: float | None = 300.0, points: int = 60) -> pd.DataFrame:
        """Long format for a line plot: seconds since the first face, emotion, share (0-1) of the faces,
        in at most `points` time bins over the last `window_s` seconds (None: the whole session)."""
        if not self.seconds:
            return pd.DataFrame(columns=COLUMNS)
        last = max(self.seconds)
        first = min(self.seconds) if window_s is None else max(min(self.seconds), last - int(window_s) + 1)
        bin_s = max(1, -(-(last - first + 1) // points))  # ceil: whole seconds per bin
        rows = []
        for start, counts in self._bins(first, bin_s):
            total = sum(counts.values())
            rows += [(start, label, counts.get(label, 0) / total) for label in self.labels]
        return pd.DataFrame(rows, columns=COLUMNS)

    def current(self, seconds: int = 5) -> dict[str, float]:
        """Each emotion's share of the faces over the last `seconds` seconds: the class right now."""
        if not self.seconds:
            return {}
        last = max(self.seconds)
        counts = sum((c for s, c in self.seconds.items() if s > last - seconds), Counter())
        total = sum(counts.values())
        return {label: counts.get(label, 0) / total for label in self.labels}

    def report(self, bin_s: int = 10) -> pd.DataFrame:
        """The whole session for export: one row per `bin_s` seconds, with the clock time (UTC), the
        number of face observations and each emotion's share."""
        rows = []
        for start, counts in self._bins(0, bin_s):
            total = sum(counts.values())
            clock = pd.Timestamp(self.started + start, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")
            rows.append({"time_utc": clock, "seconds": start, "faces_seen": total,
                         **{label: round(counts.get(label, 0) / total, 4) for label in self.labels}})
        return pd.DataFrame(rows, columns=["time_utc", "seconds", "faces_seen", *self.labels])

    def _bins(self, first: int, bin_s: int) -> list[tuple[int, Counter]]:
        """The counts from second `first` on, summed in bins of `bin_s` seconds starting there, in time order."""
        bins: dict[int, Counter] = {}
        for second, counts in self.seconds.items():
            if second >= first:
                bins.setdefault(first + (second - first) // bin_s * bin_s, Counter()).update(counts)
        return sorted(bins.items())
