"""Score the live path end to end: frame in, labels out, exactly as the app answers a photo.

    frames -> EmotionService.analyze (detector, crop geometry, preprocessing, flip TTA as served)
           -> the labelled face's prediction -> accuracy, macro-F1, per-class recall, faces missed

Two kinds of labelled frames:

* a folder of full-frame photos, ``<label>/<image>`` (label folders spelled as in training data);
* faces of any split of any supported data source, each placed into a frame (`emotion_vit.frames`).

Which face is scored: the largest one found (what a user of /analyze reads first), or, where the
frame says where its labelled face is, the detected face that overlaps it most (``match="box"``).
A frame whose labelled face is not found counts as wrong, and as missed.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .crop import Box
from .data import SPLIT_ALIASES, DataOptions, load_emotion_dataset
from .evaluation import recall_lines
from .frames import FrameOptions, placed_faces
from .images import IMAGE_SUFFIXES, read_image
from .labels import canonical_label
from .metrics import EmotionMetrics, save_confusion_matrix
from .service import EmotionService
from .track import iou
from .transforms import image_array

logger = logging.getLogger(__name__)

MATCH_MODES = ("largest", "box")
MIN_MATCH_IOU = 0.3  # a detected face this much overlapping the labelled one is that face


@dataclass(frozen=True)
class LabelledFrame:
    frame: np.ndarray  # HxWx3 uint8 RGB
    label: str  # canonical emotion
    name: str
    box: Box | None = None  # where the labelled face is, when known


def is_photo_folder(path: str | Path) -> bool:
    """True for a folder of label folders (``happy/``, ``Anger/``, ...), not split folders (``train/``)."""
    path = Path(path)
    if not path.is_dir():
        return False
    folders = [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return bool(folders) and not any(name.lower() in SPLIT_ALIASES for name in folders)


def photo_folder_frames(folder: str | Path, skipped: list[str] | None = None) -> list[LabelledFrame]:
    """Every readable image of ``folder/<label>/``, upright by EXIF; unreadable ones are noted in `skipped`."""
    folder = Path(folder)
    frames = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = canonical_label(label_dir.name, where=str(folder))
        for path in sorted(p for p in label_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                frames.append(LabelledFrame(read_image(path), label, str(path.relative_to(folder))))
            except ValueError as error:
                if skipped is None:
                    raise
                skipped.append(str(error))
    if not frames:
        raise ValueError(f"{folder}: no readable images in its label folders")
    return frames


def split_faces(data: str, split: str = "validation", limit: int | None = None, seed: int = 0,
                data_options: DataOptions | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The face images of `data[split]` and their labels: all of them, or `limit` after a seeded shuffle."""
    dataset = load_emotion_dataset(data, data_options)
    if split not in dataset:
        raise ValueError(f"split {split!r} not in {data} (available: {', '.join(dataset)})")
    subset = dataset[split]
    if limit is not None and limit < len(subset):
        subset = subset.shuffle(seed=seed).select(range(limit))
    names = subset.features["label"].names
    return [image_array(image) for image in subset["image"]], [names[i] for i in subset["label"]]


def placed_frames(
    data: str,
    split: str = "validation",
    options: FrameOptions | None = None,
    limit: int | None = None,
    data_options: DataOptions | None = None,
) -> tuple[int, Iterator[LabelledFrame]]:
    """The faces of `data[split]` (see `split_faces`), each in a frame."""
    options = options or FrameOptions()
    faces, labels = split_faces(data, split, limit, options.seed, data_options)

    def frames() -> Iterator[LabelledFrame]:
        for index, placed in enumerate(placed_faces(faces, options)):
            yield LabelledFrame(placed.frame, labels[index], f"{split}[{index}] on {placed.background}", placed.box)
    return len(faces), frames()


def evaluate_frames(service: EmotionService, frames: Iterable[LabelledFrame], match: str = "largest",
                    total: int | None = None, output_dir: str | Path | None = None, description: str = "",
                    adapter: str | None = None) -> dict:
    """Accuracy, macro-F1, per-class recall, confusion matrix and faces missed, through `service.analyze`
    (with one of the service's adapters, by name, if given)."""
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    model = service.model_for(adapter)
    labels = model.labels
    metric = EmotionMetrics(labels=labels)
    missed: Counter[str] = Counter()
    found_correct = found = 0
    answers: list[dict] = []  # per frame: its name, true label, and the label given (None: face missed)
    for item in tqdm(frames, total=total, desc="frames through the app's pipeline"):
        if item.label not in labels:
            raise ValueError(f"the model has no class {item.label!r} (its classes: {labels})")
        face = _scored_face(service.analyze(item.frame, adapter=adapter).faces, item, match)
        truth = labels.index(item.label)
        answers.append({"frame": item.name, "label": item.label, "prediction": None if face is None else face.label})
        if face is None:
            missed[item.label] += 1
            prediction = -1  # wrong for every class; absent from the confusion matrix's columns
        else:
            prediction = labels.index(face.label)
            found += 1
            found_correct += prediction == truth
        metric.add(prediction=prediction, reference=truth)
    results = metric.compute()
    results.update(model=model.name, data=description, match=match, detector=service.settings.detector,
                   flip_tta=model.flip_tta, geometry=vars(service.settings.geometry),
                   faces_missed=sum(missed.values()), missed_per_label=dict(missed),
                   accuracy_on_found=found_correct / found if found else 0.0, predictions=answers)
    if output_dir is not None:
        output_dir = Path(output_dir)
        save_confusion_matrix(results, labels, output_dir, stem="confusion_matrix_frames")
        (output_dir / "eval_frames.json").write_text(json.dumps(results, indent=1))
    return results


def _scored_face(faces: list, item: LabelledFrame, match: str):
    if match == "largest" or item.box is None:
        return faces[0] if faces else None
    overlaps = [iou(face.box, item.box) for face in faces]
    best = int(np.argmax(overlaps)) if overlaps else -1
    return faces[best] if best >= 0 and overlaps[best] >= MIN_MATCH_IOU else None


def format_frame_results(results: dict) -> str:
    tta = ", flip TTA" if results.get("flip_tta") else ""
    lines = [
        f"{results['data']}: {results['num_examples']} frames, {results['detector']}, "
        f"face picked by {results['match']}{tta}",
        f"  accuracy           {results['accuracy']:.2%}",
        f"  macro-F1           {results['macro_f1']:.4f}",
        f"  faces missed       {results['faces_missed']} "
        f"({results['faces_missed'] / max(results['num_examples'], 1):.1%})",
        f"  accuracy on found  {results['accuracy_on_found']:.2%}",
        "  recall per class:",
    ]
    return "\n".join(lines + recall_lines(results))
