"""Classification metrics for emotion models, as an `evaluate` module.

`evaluate.load("accuracy")` fetches its script from the hub, which fails offline, so the
metrics live here as an `evaluate.Metric` that works the same way (add_batch / compute)
with no network: accuracy, macro-F1, per-class recall and the confusion matrix.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score

from .labels import EMOTIONS


class EmotionMetrics(evaluate.Metric):
    """Accuracy, macro-F1, per-class recall and confusion matrix for `labels`."""

    def __init__(self, labels: tuple[str, ...] | list[str] = EMOTIONS, **kwargs):
        super().__init__(**kwargs)
        self.labels = list(labels)

    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy, macro-F1, per-class recall and confusion matrix of a face-emotion classifier.",
            citation="",
            inputs_description="predictions and references: class ids in the model's label order.",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        ids = list(range(len(self.labels)))
        recalls = recall_score(references, predictions, labels=ids, average=None, zero_division=0)
        present = sorted(set(references))  # macro-F1 over the classes the split contains
        return {
            "accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references))),
            "macro_f1": float(f1_score(references, predictions, labels=present, average="macro", zero_division=0)),
            "recall": {name: float(r) for name, r in zip(self.labels, recalls)},
            "confusion_matrix": confusion_matrix(references, predictions, labels=ids).tolist(),
            "num_examples": len(references),
        }


def flat_metrics(results: dict) -> dict[str, float]:
    """Scalars only (recall_<label> per class), for the Trainer's logs and the model card."""
    flat = {"accuracy": results["accuracy"], "macro_f1": results["macro_f1"]}
    flat.update({f"recall_{name}": value for name, value in results["recall"].items()})
    return flat


def save_confusion_matrix(
    results: dict, labels: list[str], out_dir: str | Path, stem: str = "confusion_matrix"
) -> list[Path]:
    """Write the confusion matrix as JSON (counts) and PNG (row-normalised: recall on the diagonal)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = np.asarray(results["confusion_matrix"])
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps({"labels": labels, "rows_are": "true label", "columns_are": "predicted label",
                                     "counts": counts.tolist()}, indent=1))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {results['accuracy']:.1%}, macro-F1 {results['macro_f1']:.3f}")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{rates[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    png_path = out_dir / f"{stem}.png"
    fig.savefig(png_path)
    plt.close(fig)
    return [json_path, png_path]
