"""Score a model folder on any split of any supported data source."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from datasets import Dataset
from tqdm.auto import tqdm

from .data import DataOptions, load_emotion_dataset
from .labels import canonical_label
from .metrics import EmotionMetrics, flat_metrics, save_confusion_matrix
from .model import EmotionModel, load_emotion_model
from .transforms import image_array

logger = logging.getLogger(__name__)


def evaluate_model(model: str | Path | EmotionModel, data: str, split: str = "validation", batch_size: int = 256,
                   options: DataOptions | None = None, output_dir: str | Path | None = None,
                   flip_tta: bool = False) -> dict:
    """Accuracy, macro-F1, per-class recall and confusion matrix of `model` on `data[split]`.

    Uses the same preprocessing as the app. Data classes the model lacks are an error; model
    classes the data lacks (e.g. an added "confused") simply get no examples.
    """
    model = model if isinstance(model, EmotionModel) else load_emotion_model(model)
    model = dataclasses.replace(model, flip_tta=flip_tta)  # the caller's model keeps its own setting
    dataset = load_emotion_dataset(data, options)
    if split not in dataset:
        raise ValueError(f"split {split!r} not in {data} (available: {', '.join(dataset)})")
    results = score_split(model, dataset[split], batch_size, desc=f"evaluating on {split}")
    results.update(model=model.name, data=str(data), split=split, flip_tta=flip_tta)
    if output_dir is not None:
        output_dir = Path(output_dir)
        save_confusion_matrix(results, model.labels, output_dir, stem=f"confusion_matrix_{split}")
        (output_dir / f"eval_{split}.json").write_text(json.dumps(results, indent=1))
    return results


def score_split(model: EmotionModel, subset: Dataset, batch_size: int = 256, desc: str = "evaluating") -> dict:
    """The metrics of `model` (with its own flip TTA and precision settings) on one split's raw images."""
    data_labels = subset.features["label"].names
    missing = [name for name in data_labels if name not in model.labels]
    if missing:
        raise ValueError(f"the model has no class for {missing} (its classes: {model.labels})")
    to_model_id = np.array([model.labels.index(canonical_label(name)) for name in data_labels])
    subset = subset.with_format(None)  # the images as stored, not a training transform's tensors
    metric = EmotionMetrics(labels=model.labels)
    for start in tqdm(range(0, len(subset), batch_size), desc=desc):
        rows = subset[start:start + batch_size]
        faces = [image_array(image) for image in rows["image"]]
        predictions = model.predict_proba(faces).argmax(dim=-1).numpy()
        metric.add_batch(predictions=predictions, references=to_model_id[np.asarray(rows["label"])])
    return metric.compute()


def format_results(results: dict) -> str:
    """A short human-readable report."""
    flat = flat_metrics(results)
    tta = " with flip test-time augmentation" if results.get("flip_tta") else ""
    lines = [f"{results.get('model', 'model')} on {results.get('split', '?')} ({results['num_examples']} images){tta}",
             f"  accuracy  {flat['accuracy']:.2%}", f"  macro-F1  {flat['macro_f1']:.4f}", "  recall per class:"]
    return "\n".join(lines + recall_lines(results))


def recall_lines(results: dict) -> list[str]:
    """Recall per class the data has; for each class it lacks (an adapter's new label), the faces it took."""
    counts = np.asarray(results["confusion_matrix"])
    missed = results.get("missed_per_label", {})  # evaluate-frames: a face the detector missed is in no column
    faces = counts.sum(axis=1) + np.asarray([missed.get(name, 0) for name in results["recall"]])
    lines = [f"    {name:<10} {value:.2%}" for i, (name, value) in enumerate(results["recall"].items()) if faces[i]]
    for j, name in enumerate(results["recall"]):
        if not faces[j]:
            taken = sorted(((counts[i, j] / faces[i], other) for i, other in enumerate(results["recall"]) if faces[i]),
                           reverse=True)
            lines.append(f"  {name} (not in the data) took " + ", ".join(f"{share:.1%} of {other}"
                                                                       for share, other in taken) + " faces")
    return lines
