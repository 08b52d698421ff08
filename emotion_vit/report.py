"""Files for the visitor to download: the session report (the class's mood as CSV and PNG) and a photo's answer (JSON).

Only numbers go in (shares per emotion over time; boxes and probabilities), never a face or a frame.
Each download gets a folder of its own under the system's temp dir, deleted `KEEP_S` seconds later
(and any older folder, left by a stopped server, when the next one is made); Gradio serves its own
copy from its cache, which the app purges within minutes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .annotate import emotion_color
from .mood import MoodTimeline

REPORTS_DIR = Path(tempfile.gettempdir()) / "emotion_vit-reports"
KEEP_S = 600


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
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=REPORTS_DIR))
    timer = threading.Timer(KEEP_S, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True})
    timer.daemon = True  # never holds up the server's exit
    timer.start()
    return folder


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
            if now - folder.stat().st_mtime > KEEP_S:
                shutil.rmtree(folder, ignore_errors=True)
