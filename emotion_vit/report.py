"""Files for the visitor to download: the session report (the class's mood as CSV and PNG) and a photo's answer (JSON).

Only numbers go in (shares per emotion over time; boxes and probabilities), never a face or a frame.
Each download gets a folder of its own under the system's temp dir, deleted `KEEP_S` seconds later
(within `PURGE_EVERY_S`: one thread purges them, as does each new download, which also finds folders
left by a stopped server); Gradio serves its own
copy from its cache, which the app purges within minutes.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .annotate import emotion_color
from .mood import MoodTimeline

logger = logging.getLogger(__name__)
REPORTS_DIR = Path(tempfile.gettempdir()) / "emotion_vit-reports"
KEEP_S = 600
PURGE_EVERY_S = 60


def write_session_report(mood: MoodTimeline, bin_s: int = 10) -> list[Path]:
    """mood.csv (one row per `bin_s` seconds: UTC time, faces seen, each emotion's share) and mood.png."""
    table = mood.report(bin_s)
    if table.empty:
        raise ValueError("No faces seen yet: start the webcam first.")
    folder = new_download_folder("session-")
    csv_path, png_path = folder / "mood.csv", folder / "mood.png"
    table.to_csv(csv_path, index=False)
    plot_mood(table, mood.labels, png_path)
    return [csv_path, png_path]


def write_answer_json(answer: dict, name: str = "faces.json") -> Path:
    """A photo's answer (as /analyze gives it) as a JSON file to download."""
    path = new_download_folder("photo-") / name
    path.write_text(json.dumps(answer, indent=1))
    return path


def new_download_folder(prefix: str) -> Path:
    purge_old_reports()
    _start_purging()
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=REPORTS_DIR))


_purger = threading.Lock()  # held for good by the one thread that purges (a timer per download was a thread each)


def _start_purging() -> None:
    if _purger.acquire(blocking=False):
        threading.Thread(target=_purge_forever, name="purge-reports", daemon=True).start()  # never holds up exit


def _purge_forever() -> None:
    while True:
        time.sleep(PURGE_EVERY_S)
        try:
            purge_old_reports()
        except Exception:  # the folder removed under it, a full disk: try again next time, never stop
            logger.warning("purging old downloads failed", exc_info=True)


def plot_mood(table, labels: list[str], path: Path) -> None:
    """Each emotion's share of the faces over the session, one line per emotion in its box colour."""
    import matplotlib
    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    minutes = table["seconds"] / 60
    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=120)
    for label in labels:
        red, green, blue = emotion_color(label)
        axes.plot(minutes, table[label], label=label, color=(red / 255, green / 255, blue / 255), linewidth=2)
    axes.set(xlabel=f"minutes since {table['time_utc'].iloc[0]} UTC", ylabel="share of faces", ylim=(0, 1),
             title="Class mood: each emotion's share of the faces")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def purge_old_reports(now: float | None = None) -> None:
    now = time.time() if now is None else now
    if REPORTS_DIR.is_dir():
        for folder in REPORTS_DIR.iterdir():
            try:
                old = now - folder.stat().st_mtime > KEEP_S
            except OSError:  # another request's purge removed it first
                continue
            if old:
                shutil.rmtree(folder, ignore_errors=True)
