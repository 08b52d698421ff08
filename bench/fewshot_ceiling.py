"""How much of the few-shot new-class result is the base model's features? The prototype gate of
emotion_vit.adapt, run on any model's frozen embedding, with one class's output masked.

    python bench/fewshot_ceiling.py --model runs/fer2013-pvt-no-surprise   # the real experiment
    python bench/fewshot_ceiling.py --model models/emotion-vit-fer2013     # features that saw surprise
    python bench/fewshot_ceiling.py --model models/emotion-vit-fer2013 --directions cosine whitened

The first is bench/fewshot.py's new-class experiment (same draws of Training references, same
calibration on the model's feature bank). The second is not a valid few-shot result: the shipped
model learned surprise from 3,171 faces. With its surprise output masked, it shows what the same
5 references and the same gate reach when the backbone's features already separate the class:
the ceiling that a stronger base trained without surprise could approach. `--directions whitened`
tries a lever: the gate along a Fisher (whitened) direction instead of the prototype's mean.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fewshot import split_arrays
from machine import machine_line

from emotion_vit.adapt import AdaptOptions, calibrate_gate, embeddings, load_feature_stats
from emotion_vit.adapt.gates import label_views
from emotion_vit.data import load_emotion_dataset
from emotion_vit.model import load_emotion_model
from emotion_vit.pipeline import set_inference_threads
from emotion_vit.transforms import training_augmentation


@torch.inference_mode()
def features_and_probabilities(model, faces, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.cat([embeddings(model.model, model.preprocessing(faces[i:i + batch_size]))
                          for i in range(0, len(faces), batch_size)])
    return features, model.model.classifier(features).softmax(-1)


def whitened_direction(views: torch.Tensor, bank: torch.Tensor, bank_ids: torch.Tensor) -> torch.Tensor:
    """A lever for the gate: the references' mean minus the bank's, through the inverse of the bank's
    within-class covariance (Fisher's discriminant; shrunk 10% toward its diagonal mean)."""
    centred = torch.cat([bank[bank_ids == c] - bank[bank_ids == c].mean(0) for c in bank_ids.unique()])
    covariance = centred.T @ centred / len(centred)
    covariance = 0.9 * covariance + 0.1 * covariance.diagonal().mean() * torch.eye(len(covariance))
    return F.normalize(torch.linalg.solve(covariance, views.mean(0) - bank.mean(0)), dim=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--heldout", default="surprise")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013.zip"))
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--directions", nargs="+", choices=["cosine", "whitened"], default=["cosine"],
                        help="the gate's direction: the shipped prototype (cosine) and/or a whitened one (a lever)")
    args = parser.parse_args()
    set_inference_threads()
    print(f"machine: {machine_line()}", flush=True)
    model = load_emotion_model(args.model)
    data = load_emotion_dataset(args.data)
    test_faces, test_labels, names = split_arrays(data["validation"])
    train_faces, train_labels, _ = split_arrays(data["train"])
    options = AdaptOptions()
    stats = load_feature_stats(model)
    kept = [i for i, label in enumerate(model.labels) if label != args.heldout]  # mask the class if the model has it
    in_bank = torch.isin(stats["bank_labels"], torch.tensor(kept))
    bank, bank_ids = F.normalize(stats["bank_features"].float(), dim=-1)[in_bank], stats["bank_labels"][in_bank]
    features, probabilities = features_and_probabilities(model, test_faces)
    features = F.normalize(features.float(), dim=-1)
    base_prediction = np.array(model.labels)[np.array(kept)[probabilities[:, kept].argmax(-1).numpy()]]
    truth = np.array(names)[test_labels]
    others = truth != args.heldout
    before = float(np.mean(base_prediction[others] == truth[others]))
    pool = np.flatnonzero(train_labels == names.index(args.heldout))
    augment = training_augmentation(options.augmentation_strength, options.seed)
    print(f"{args.model}: other classes {before:.1%} before; gate at {options.false_positive_rate:.0%} of the bank")
    for k in (1, 5, 10):
        recalls, others_after = {d: [] for d in args.directions}, {d: [] for d in args.directions}
        for draw in range(args.draws):  # the draws of bench/fewshot.py
            picks = np.random.default_rng(1000 * k + draw).choice(pool, k, replace=False)
            views = label_views([model.preprocessing.gray(train_faces[i]) for i in picks], options.views_per_label,
                                 model.preprocessing, augment)
            with torch.inference_mode():
                views = F.normalize(embeddings(model.model, views).float(), dim=-1)
            for kind in args.directions:
                if kind == "cosine":  # the shipped gate
                    direction, threshold, _ = calibrate_gate(views, bank, options.false_positive_rate)
                else:  # the same calibration on another direction
                    direction = whitened_direction(views, bank, bank_ids)
                    threshold = torch.quantile(bank @ direction, 1 - options.false_positive_rate)
                predicted = np.where((features @ direction > threshold).numpy(), args.heldout, base_prediction)
                recalls[kind].append(np.mean(predicted[~others] == args.heldout))
                others_after[kind].append(np.mean(predicted[others] == truth[others]))
        for kind in args.directions:
            print(f"k={k:2d} {kind}: {args.heldout} recall {np.mean(recalls[kind]):.1%} ± {np.std(recalls[kind]):.1%}, "
                  f"other classes {before:.1%} -> {np.mean(others_after[kind]):.1%} ± {np.std(others_after[kind]):.1%}",
                  flush=True)


if __name__ == "__main__":
    main()
