"""The "lora" and "head" methods: a peft adapter trained on the references against replayed base features."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from ..features import FeatureReplay, embeddings, load_feature_stats
from ..model import EmotionModel
from ..transforms import Preprocessing, training_augmentation
from .checks import STRENGTHS, cross_validation_record, reference_folds
from .classifier import grow_classifier, imprint
from .options import AdaptOptions
from .references import References

ATTENTION_LINEARS = r".*\.attention\.(query|key|value|proj|q_proj|k_proj|v_proj|o_proj)$"
MLP_LINEARS = r".*\.mlp\.(dense1|dense2|fc1|fc2)$"


def _target_modules(options: AdaptOptions) -> str:
    if options.method == "head":
        return r"^classifier$"  # a low-rank update of the last layer only
    return f"({ATTENTION_LINEARS}|{MLP_LINEARS})" if options.include_mlp else ATTENTION_LINEARS

def build_peft(model: nn.Module, base: EmotionModel, refs: References, labels: list[str], new_labels: list[str],
                options: AdaptOptions, progress) -> tuple[PeftModel, int, FeatureReplay | None, dict]:
    """The "lora" and "head" methods: a grown, imprinted classifier and a trained peft adapter, and
    what the build measured (head: its strength, cross-validated on the references)."""
    base_labels = list(base.labels)
    grow_classifier(model, new_labels)
    label_ids = torch.tensor([labels.index(label) for label in refs.labels])
    clean = base.preprocessing(refs.crops)
    imprint(model, [labels.index(label) for label in new_labels],
            {int(i): clean[label_ids == i] for i in label_ids.unique()}, len(base_labels))
    peft_model = get_peft_model(model, LoraConfig(
        r=options.rank, lora_alpha=options.alpha, lora_dropout=0.0, target_modules=_target_modules(options),
        modules_to_save=None if options.method == "head" else ["classifier"]))
    stats = load_feature_stats(base) if options.replay_weight > 0 else None
    replay = FeatureReplay(stats) if stats is not None else None
    if options.method == "lora":
        steps_done, details = _train_lora(peft_model, refs, label_ids, len(base_labels), base.preprocessing, replay,
                                          options, progress), {}
    else:
        steps_done, details = _train_head(peft_model, refs, label_ids, base.preprocessing, replay, options, progress)
    return peft_model, steps_done, replay, details

class _BalancedViews:
    """Augmented views of the references, drawn class-balanced (k may differ per label, down to 1)."""

    def __init__(self, refs: References, label_ids: torch.Tensor, preprocessing: Preprocessing, strength: float,
                 seed: int):
        self.grays = [preprocessing.gray(crop) for crop in refs.crops]
        self.by_label = {int(i): np.flatnonzero(label_ids.numpy() == i) for i in label_ids.unique()}
        self.label_ids, self.preprocessing = label_ids, preprocessing
        self.augment = training_augmentation(strength, seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`size` views: pixels, label ids, and the index of the reference each view was made from."""
        picks = [int(np.random.choice(self.by_label[random.choice(list(self.by_label))])) for _ in range(size)]
        pixels = self.preprocessing.normalize(
            [self.preprocessing.resize(self.augment(image=self.grays[i])["image"]) for i in picks])
        return pixels, self.label_ids[picks], torch.tensor(picks)

def _replay_loss(model: PeftModel, replay: FeatureReplay | None, options: AdaptOptions) -> torch.Tensor:
    """Cross-entropy of the (adapted) classifier on features sampled from the base classes."""
    if replay is None:
        return torch.zeros(())
    features, labels = replay.sample(options.replay_batch)
    return options.replay_weight * F.cross_entropy(model.get_base_model().classifier(features), labels)

def _train_lora(model: PeftModel, refs: References, label_ids: torch.Tensor, num_base: int,
                preprocessing: Preprocessing, replay: FeatureReplay | None, options: AdaptOptions, progress) -> int:
    """Augmented steps of cross-entropy + replay + distillation; stops early once the references fit."""
    views = _BalancedViews(refs, label_ids, preprocessing, options.augmentation_strength, options.seed)
    head = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
    optimizer = torch.optim.AdamW([{"params": lora, "lr": options.learning_rate},
                                   {"params": head, "lr": options.head_learning_rate}], weight_decay=0.0)
    temperature, fitted_steps = options.distillation_temperature, 0
    model.train()
    for step in range(1, options.steps + 1):
        pixels, targets, _ = views.batch(options.batch_size)
        logits = model(pixel_values=pixels).logits
        loss = F.cross_entropy(logits, targets) + _replay_loss(model, replay, options)
        if options.distillation_weight > 0:
            with torch.no_grad(), model.disable_adapter():
                teacher = model(pixel_values=pixels).logits[:, :num_base]
            # Keep the base model's view of every *other* base class: mask each example's own label.
            mask = F.one_hot(targets.clamp(max=num_base - 1), num_base).bool() & (targets < num_base)[:, None]
            student = logits[:, :num_base].masked_fill(mask, -1e4) / temperature
            teacher = teacher.masked_fill(mask, -1e4) / temperature
            distill = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                               reduction="batchmean") * temperature ** 2
            loss = loss + options.distillation_weight * distill
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        fitted_steps = fitted_steps + 1 if (logits.argmax(-1) == targets).all() else 0
        progress(step / options.steps, f"step {step}/{options.steps}, loss {loss.item():.3f}")
        if fitted_steps >= 10:  # every reference right for 10 batches in a row; never a clock (reproducible)
            break
    return step

def _train_head(model: PeftModel, refs: References, label_ids: torch.Tensor, preprocessing: Preprocessing,
                replay: FeatureReplay | None, options: AdaptOptions, progress) -> tuple[int, dict]:
    """A last-layer fine-tune on frozen features: augmented views of the references (embedded once)
    against replayed base-class features. The backbone is untouched, so this is fast, fast enough to
    be cross-validated on the references: the update is then kept at the smallest strength that labels
    the held-out references about as well as the best one."""
    views = _BalancedViews(refs, label_ids, preprocessing, options.augmentation_strength, options.seed)
    view_count = max(256, 32 * len(views.by_label))
    with model.disable_adapter():
        batches = [views.batch(128) for _ in range(view_count // 128)]
        features = torch.cat([embeddings(model.get_base_model(), pixels) for pixels, _, _ in batches])
        references = embeddings(model.get_base_model(), preprocessing(refs.crops))  # each as it is, unaugmented
    targets = torch.cat([labels for _, labels, _ in batches])
    sources = torch.cat([picks for _, _, picks in batches])
    start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    right = torch.zeros(len(STRENGTHS))
    folds = reference_folds(label_ids, options.head_folds)
    for i, fold in enumerate(folds):
        kept = ~torch.isin(sources, fold)  # the views of the other folds' references
        _fit_head(model, features[kept], targets[kept], replay, options)
        right += _right_at_strengths(model, references[fold], label_ids[fold])
        _set_trainable(model, start)
        progress(0.8 * (i + 1) / (len(folds) + 1), f"cross-validated fold {i + 1}/{len(folds)}")
    steps = _fit_head(model, features, targets, replay, options)
    record = cross_validation_record(right, len(refs.labels), len(folds))
    _scale_update(model, record["strength"])
    progress(0.95, f"kept at strength {record['strength']}")
    return steps, {"cross_validation": record}


def _fit_head(model: PeftModel, features: torch.Tensor, targets: torch.Tensor, replay: FeatureReplay | None,
              options: AdaptOptions) -> int:
    classifier = model.get_base_model().classifier
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.head_learning_rate,
                                  weight_decay=0.0)
    steps = options.steps * 3  # feature-only steps cost next to nothing
    for _ in range(steps):
        picks = torch.randint(len(features), (options.batch_size,))
        loss = F.cross_entropy(classifier(features[picks]), targets[picks]) + _replay_loss(model, replay, options)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps


@torch.no_grad()
def _right_at_strengths(model: PeftModel, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many of these references each strength of the update labels right (the update of a linear
    layer is linear in its strength: base + s * (adapted - base))."""
    classifier = model.get_base_model().classifier
    adapted = classifier(features)
    with model.disable_adapter():
        base = classifier(features)
    return torch.tensor([float(((base + s * (adapted - base)).argmax(-1) == targets).sum()) for s in STRENGTHS])


def _set_trainable(model: PeftModel, values: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in values:
                p.copy_(values[name])


def _scale_update(model: PeftModel, strength: float) -> None:
    """Scale the low-rank update (B of B @ A) by `strength`: 0 leaves the base classifier as it was."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(strength)
