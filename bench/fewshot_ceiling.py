"""How much of the few-shot new-class result is the base model's features, and which gate uses them
best? The prototype gate of emotion_vit.adapt, run on any model's frozen features, with one class's
output masked.

    python bench/fewshot_ceiling.py --model runs/fer2013-pvt-no-surprise   # the real experiment
    python bench/fewshot_ceiling.py --model models/emotion-vit-fer2013     # features that saw surprise
    python bench/fewshot_ceiling.py --model models/emotion-vit-fer2013 --directions cosine whitened
    python bench/fewshot_ceiling.py --model runs/fer2013-pvt-no-surprise \\
        --features final stage3 stage3-grid --directions cosine whitened nearest logistic
    python bench/fewshot_ceiling.py --model runs/fer2013-pvt-no-surprise --ks 5 100 10000 --draws 1  # 10000: all

The first is bench/fewshot.py's new-class experiment (same draws of Training references, same
calibration: 2% of real faces of the other classes pass). The second is not a valid few-shot result:
the shipped model learned surprise from 3,171 faces. With its surprise output masked, it shows what
the same 5 references and the same gate reach when the backbone's features already separate the
class. Levers:
- `--directions`: the gate along the prototype's mean (cosine, shipped until 2026-12-07), a Fisher
  direction (whitened, shipped since: `AdaptOptions.gate_direction`), the nearest reference view
  (nearest), or a logistic regression of the reference views against the bank (logistic; fitted on
  half the bank, calibrated on the other half), the prototype's similarity minus the nearest base
  class's (margin), or that with the prototype first fused with the base prototypes it resembles
  (teen: Wang et al., NeurIPS 2023), or the Fisher score plus the base model's doubt (one minus its
  highest probability, both standardised on the bank: whitened-doubt), so that the gate prefers faces the
  base model would likely get wrong anyway (Hendrycks and Gimpel's novelty score).
- `--directions lora` (or `head`): the gate decides when, the adapter what it is: the `lora` (or
  `head`) adapter trained on the references (as `train.py adapt --method lora` or `head`), its probability of
  the new class as the score, calibrated on real Training faces of the other classes (images through
  the adapted model); the base model answers for every face the gate does not take. Only for a model
  without the class; it reads no frozen features (give it with `--features final` alone).
- `--features`: the classifier's input (final, shipped), or an earlier stage of the backbone, pooled
  (stage3) or kept as its spatial grid (stage3-grid, stage4-grid): a backbone trained without the
  class may have discarded it by its last layer but not before.
- `--gate-model`: the gate reads another model's features (one that was never taught the base classes'
  boundaries, such as a backbone pretrained by masked-image modelling), the base model answers the rest.
Each row also gives the gate's bound: the most of the class its score finds with at most
`--loss-budget` of the other classes' faces lost, its threshold picked on the scored faces themselves (not
a result: a gate cannot see them; it shows how much a better threshold could add to the same score).
With `--features final`, the bank is the model's shipped feature bank; otherwise (or with `--gate-model`)
256 Training faces per class are drawn (seeded) and embedded the same way.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from fewshot import adapt, references, split_arrays
from machine import machine_line
from paths import FER2013

from emotion_vit.adapt import AdaptOptions, calibrate_gate, embeddings, load_feature_stats
from emotion_vit.adapt.gates import label_views, within_class_precision
from emotion_vit.data import load_emotion_dataset
from emotion_vit.model import load_emotion_model
from emotion_vit.pipeline import set_inference_threads
from emotion_vit.transforms import training_augmentation

ADAPTER_DIRECTIONS = ("lora", "head")  # gates scored by a trained adapter, not by frozen features
STAGES = {"stage3": (2, "pooled"), "stage3-grid": (2, "grid"), "stage4-grid": (3, "grid")}


@torch.inference_mode()
def features_of(model, pixels: torch.Tensor, kind: str, batch_size: int = 512) -> torch.Tensor:
    """Unit-length features of `kind` for preprocessed faces."""
    chunks = []
    for i in range(0, len(pixels), batch_size):
        batch = pixels[i:i + batch_size]
        if kind == "final":
            chunks.append(embeddings(model.model, batch).float())
            continue
        stage, form = STAGES[kind]
        hidden = model.model(pixel_values=batch, output_hidden_states=True).hidden_states[stage].float()
        chunks.append(hidden.mean((2, 3)) if form == "pooled" else hidden.flatten(1))
    return F.normalize(torch.cat(chunks), dim=-1)


def logistic_scorer(views: torch.Tensor, negatives: torch.Tensor, steps: int = 200, weight_decay: float = 1e-2):
    """An L2-regularised logistic regression of the views (positives) against the negatives, classes
    weighted equally; returns the scoring function."""
    inputs = torch.cat([views, negatives])
    targets = torch.cat([torch.ones(len(views)), torch.zeros(len(negatives))])
    weights = torch.where(targets == 1, 0.5 / len(views), 0.5 / len(negatives))
    linear = torch.nn.Linear(inputs.shape[1], 1)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(linear(inputs).squeeze(1), targets, reduction="none")
                * weights).sum() + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)

    @torch.no_grad()
    def score(features: torch.Tensor) -> torch.Tensor:
        return linear(features).squeeze(1)
    return score


TEEN_FUSION, TEEN_TEMPERATURE = 0.5, 16.0  # Wang et al. (NeurIPS 2023), their defaults


def margin_scorer(views: torch.Tensor, bank: torch.Tensor, bank_ids: torch.Tensor, teen: bool = False):
    """How much closer a face is to the new prototype than to the nearest base class's (the bank's class
    means): a face close to everything no longer passes for the new class. With `teen`, the new prototype
    is first fused with the base prototypes it resembles (TEEN: "Few-Shot Class-Incremental Learning via
    Training-Free Prototype Calibration", Wang et al. 2023), which pulls it toward where the base model
    puts the new class's faces."""
    prototype = F.normalize(views.mean(0), dim=0)
    base = F.normalize(torch.stack([bank[bank_ids == c].mean(0) for c in bank_ids.unique()]), dim=-1)
    if teen:
        weights = (TEEN_TEMPERATURE * (base @ prototype)).softmax(0)
        prototype = F.normalize(TEEN_FUSION * prototype + (1 - TEEN_FUSION) * weights @ base, dim=0)
    return lambda features: features @ prototype - (features @ base.T).amax(-1)


DOUBT_WEIGHT = 0.5  # of the standardised doubt against the standardised Fisher score


def gate_scores(kind: str, views, bank, bank_ids, rate: float, test, generator, doubt=None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate's scores on the test faces and its threshold (`rate` of bank faces pass); `doubt` is the
    base model's (test faces, bank faces), for whitened-doubt."""
    if kind == "cosine":  # the shipped gate until 2026-12-07 (gate_direction "mean")
        direction, threshold, _ = calibrate_gate(views, bank, rate)
        return test @ direction, threshold
    if kind == "whitened":  # the shipped gate since 2026-12-07 (gate_direction "fisher")
        direction, threshold, _ = calibrate_gate(views, bank, rate, within_class_precision((bank, bank_ids.tolist())))
        return test @ direction, threshold
    if kind == "whitened-doubt":
        direction, _, _ = calibrate_gate(views, bank, rate, within_class_precision((bank, bank_ids.tolist())))
        fisher, fisher_bank = test @ direction, bank @ direction
        doubt_test, doubt_bank = doubt
        score = lambda f, d: ((f - fisher_bank.mean()) / fisher_bank.std()  # noqa: E731
                              + DOUBT_WEIGHT * (d - doubt_bank.mean()) / doubt_bank.std())
        return score(fisher, doubt_test), torch.quantile(score(fisher_bank, doubt_bank), 1 - rate)
    if kind == "nearest":
        score = lambda features: (features @ views.T).amax(-1)  # noqa: E731
        return score(test), torch.quantile(score(bank), 1 - rate)
    if kind in ("margin", "teen"):
        score = margin_scorer(views, bank, bank_ids, teen=kind == "teen")
        return score(test), torch.quantile(score(bank), 1 - rate)
    half = torch.randperm(len(bank), generator=generator)
    fit, calibrate = half[: len(bank) // 2], half[len(bank) // 2:]
    score = logistic_scorer(views, bank[fit])
    return score(test), torch.quantile(score(bank[calibrate]), 1 - rate)


def adapter_gate_scores(method: str, model, train_faces, train_labels, names, picks, heldout: str, bank_faces,
                        rate: float, test_faces, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `method` adapter's probability of the new class on the test faces, and the threshold that `rate`
    of the bank's face images pass through the same adapted model."""
    refs = references(train_faces, train_labels, names, {heldout: picks})
    adapted, _, _ = adapt(model, refs, AdaptOptions(method=method, seed=seed))
    column = adapted.labels.index(heldout)

    def score(faces):
        return torch.cat([adapted.predict_proba(faces[i:i + 512])[:, column] for i in range(0, len(faces), 512)])
    return score(test_faces), torch.quantile(score(bank_faces), 1 - rate)


def bound_recall(scores: np.ndarray, target: np.ndarray, right: np.ndarray, others: np.ndarray, budget: float) -> float:
    """The most of `target` a threshold on `scores` takes while it takes at most `budget` of the `others`
    (the faces of the classes the base knows) away from a right label (`right`)."""
    order = np.argsort(-scores, kind="stable")
    within = np.flatnonzero(np.cumsum(right[order]) <= budget * others.sum())
    return float(target[order][: within[-1] + 1].sum() / target.sum()) if len(within) else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--heldout", default="surprise")
    parser.add_argument("--data", default=str(FER2013))
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--directions", nargs="+", default=["cosine", "whitened"],
                        choices=["cosine", "whitened", "whitened-doubt", "nearest", "logistic", "margin", "teen",
                                 *ADAPTER_DIRECTIONS],
                        help="the gate's score (whitened: the shipped prototype gate; cosine: the one before)")
    parser.add_argument("--features", nargs="+", choices=["final", *STAGES], default=["final"],
                        help="which features the gate reads (final: the classifier's input, shipped)")
    parser.add_argument("--gate-model", help=(
        "another model whose features the gate reads (e.g. a backbone pretrained without labels, "
        "train.py --objective masked_image_modeling), while --model answers for every face the gate does not take"))
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help=(
        "references per draw; a k beyond the class's Training faces takes them all: with every one of them the "
        "gate shows what the features carry of the class, whatever few-shot estimation loses"))
    parser.add_argument("--false-positive-rate", type=float, default=AdaptOptions.false_positive_rate,
                        help="the share of the bank's faces (other classes) a gate lets through")
    parser.add_argument("--loss-budget", type=float, default=0.02,
                        help="the share of the other classes' faces a gate may cost, for its bound")
    args = parser.parse_args()
    set_inference_threads()
    print(f"machine: {machine_line()}", flush=True)
    model = load_emotion_model(args.model)
    reader = load_emotion_model(args.gate_model) if args.gate_model else model  # whose features the gate reads
    data = load_emotion_dataset(args.data)
    test_faces, test_labels, names = split_arrays(data["validation"])
    train_faces, train_labels, _ = split_arrays(data["train"])
    options = AdaptOptions(false_positive_rate=args.false_positive_rate)
    kept = [i for i, label in enumerate(model.labels) if label != args.heldout]  # mask the class if the model has it
    if set(ADAPTER_DIRECTIONS) & set(args.directions) and args.heldout in model.labels:
        parser.error(f"--directions {' and '.join(ADAPTER_DIRECTIONS)} need a model trained without {args.heldout!r}")
    with torch.inference_mode():
        probabilities = torch.cat([model.model(pixel_values=model.preprocessing(test_faces[i:i + 512])).logits
                                   for i in range(0, len(test_faces), 512)]).softmax(-1)
    base_prediction = np.array(model.labels)[np.array(kept)[probabilities[:, kept].argmax(-1).numpy()]]
    truth = np.array(names)[test_labels]
    target = truth == args.heldout
    others = np.isin(truth, [model.labels[c] for c in kept])  # the classes the model knows, bar the held-out one
    right = others & (base_prediction == truth)
    before = float(right.sum() / others.sum())
    pool = np.flatnonzero(train_labels == names.index(args.heldout))
    print(f"{args.model}: other classes {before:.1%} before; gate at {options.false_positive_rate:.1%} of the bank")
    rng = np.random.default_rng(0)  # 256 Training faces per other class: images, for the bank of other features
    bank_picks = np.concatenate([rng.choice(np.flatnonzero(train_labels == names.index(model.labels[c])), 256,
                                            replace=False) for c in kept])
    bank_faces = [train_faces[i] for i in bank_picks]
    rows = []
    for feature_kind in args.features:
        test = features_of(reader, reader.preprocessing(test_faces), feature_kind)
        if feature_kind == "final" and reader is model:  # the model's shipped bank, as the adapters calibrate
            stats = load_feature_stats(model)
            in_bank = torch.isin(stats["bank_labels"], torch.tensor(kept))
            bank = F.normalize(stats["bank_features"].float(), dim=-1)[in_bank]
            bank_ids = stats["bank_labels"][in_bank]
            with torch.inference_mode():  # the base's doubt on its bank faces, from the same features
                bank_probabilities = model.model.classifier(stats["bank_features"].float()[in_bank]).softmax(-1)
            doubt = (1 - probabilities[:, kept].amax(-1), 1 - bank_probabilities[:, kept].amax(-1))
        else:
            bank = features_of(reader, reader.preprocessing(bank_faces), feature_kind)
            bank_ids = torch.as_tensor(train_labels[bank_picks])
            doubt = None
            if "whitened-doubt" in args.directions:
                parser.error("--directions whitened-doubt reads the model's bank: --features final, no --gate-model")
        augment = training_augmentation(options.augmentation_strength, options.seed)
        for k in args.ks:
            recalls, others_after = {d: [] for d in args.directions}, {d: [] for d in args.directions}
            bounds = {d: [] for d in args.directions}
            for draw in range(args.draws):  # the draws of bench/fewshot.py
                picks = np.random.default_rng(1000 * k + draw).choice(pool, min(k, len(pool)), replace=False)
                views = features_of(reader, label_views([reader.preprocessing.gray(train_faces[i]) for i in picks],
                                                        options.views_per_label, reader.preprocessing, augment),
                                    feature_kind)
                for kind in args.directions:
                    if kind in ADAPTER_DIRECTIONS:
                        scores, threshold = adapter_gate_scores(kind, model, train_faces, train_labels, names, picks,
                                                                args.heldout, bank_faces, options.false_positive_rate,
                                                                test_faces, seed=draw)
                    else:
                        scores, threshold = gate_scores(kind, views, bank, bank_ids, options.false_positive_rate,
                                                        test, torch.Generator().manual_seed(draw), doubt)
                    predicted = np.where((scores > threshold).numpy(), args.heldout, base_prediction)
                    recalls[kind].append(np.mean(predicted[target] == args.heldout))
                    bounds[kind].append(bound_recall(scores.numpy(), target, right, others, args.loss_budget))
                    others_after[kind].append(np.mean(predicted[others] == truth[others]))
            for kind in args.directions:
                rows.append((feature_kind, kind, k, recalls[kind], others_after[kind], bounds[kind]))
                print(f"{feature_kind} {kind} k={k:2d}: {args.heldout} recall {np.mean(recalls[kind]):.1%} ± "
                      f"{np.std(recalls[kind]):.1%}, other classes {before:.1%} -> {np.mean(others_after[kind]):.1%} ± "
                      f"{np.std(others_after[kind]):.1%}; bound {np.mean(bounds[kind]):.1%}", flush=True)
    print(f"\n| features | gate | k | {args.heldout} recall | other classes (before {before:.1%}) "
          f"| bound: recall at <= {args.loss_budget:.0%} lost, threshold on the scored faces |\n"
          "|---|---|---|---|---|---|")
    for feature_kind, kind, k, recall, after, bound in rows:
        print(f"| {feature_kind} | {kind} | {k} | {np.mean(recall):.1%} ± {np.std(recall):.1%} | "
              f"{np.mean(after):.1%} ± {np.std(after):.1%} | {np.mean(bound):.1%} ± {np.std(bound):.1%} |")


if __name__ == "__main__":
    main()
