"""The "confusion" method: what a room calls each of the model's answers, learned from its references.

A room's faces can be read consistently wrong (a studio's posed fear with the wide eyes of FER2013's
surprise): the features are fine, the answer is the wrong name. The adapter keeps the model and maps
its probabilities through a confusion matrix,

    p_room(y | face) = sum_c T[y, c] p(c | face),    column c of T = softmax(A[:, c]),

fitted to the references by maximum a posteriori: the references' log-likelihood plus a Gaussian prior
pulling A to its start (T about 0.9 on the diagonal, where the model's answers stand). The prior is
fixed, so a handful of references moves T little and dozens move it far. Full-batch L-BFGS from a fixed
start: no random draw, the same references give the same bytes. Cross-validated on the references when
built, like head, it keeps only as much of the matrix as held-out references support.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..features import embeddings
from ..model import EmotionModel
from .checks import STRENGTHS, cross_validation_record, reference_folds
from .options import AdaptError, AdaptOptions
from .references import References

START_LOGIT = 4.0  # A's diagonal at the start and under the prior: T's diagonal e^4 / (e^4 + 6) = 0.90
PRIOR_WEIGHT = 0.1  # bench/fewshot.py, the rooms (docs/benchmarks.md): 0.03 lost up to 5 points, 0.3 learned slowly


class ConfusionLayer(nn.Module):
    """The base classifier, then the room's confusion matrix; returns log p, like PrototypeGate, so that
    softmax(output) == p for every caller."""

    FORMAT = "emotion_vit.confusion"  # saved in the safetensors header

    def __init__(self, base: nn.Linear, transition: torch.Tensor):
        super().__init__()
        self.base = base
        self.register_buffer("transition", transition.float())  # (room labels, model labels), columns sum to 1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probabilities = self.base(features).float().softmax(-1)
        with torch.autocast(features.device.type, enabled=False):  # 7x7: float32 costs nothing, bf16 would round p
            return (probabilities @ self.transition.T).clamp_min(1e-12).log()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"transition": self.transition.contiguous()}


def fit_transition(probabilities: torch.Tensor, targets: torch.Tensor, prior_weight: float = PRIOR_WEIGHT
                   ) -> torch.Tensor:
    """The MAP confusion matrix for the model's `probabilities` of faces labelled `targets`."""
    count = probabilities.shape[1]
    start = torch.eye(count) * START_LOGIT
    logits = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([logits], max_iter=300, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        mixed = probabilities @ logits.softmax(0).T
        value = F.nll_loss(mixed.clamp_min(1e-12).log(), targets, reduction="sum")
        value = value + prior_weight * ((logits - start) ** 2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return logits.detach().softmax(0)


@torch.no_grad()
def reference_probabilities(model: nn.Module, base: EmotionModel, refs: References) -> torch.Tensor:
    """The base model's probabilities for each reference as it is (one view)."""
    return model.classifier(embeddings(model, base.preprocessing(refs.crops))).float().softmax(-1)


def build_confusion(model: nn.Module, base: EmotionModel, refs: References, options: AdaptOptions,
                    progress) -> dict:
    """Install a ConfusionLayer on `model`, fitted to the references; every base label must have
    references and there may be no new one (a confusion matrix renames answers, it learns no face).
    Cross-validated on the references as head is: the matrix is kept at the smallest strength (the
    identity mixed with it) that labels held-out references within one standard error of the best."""
    labels = list(base.labels)
    missing = [label for label in labels if label not in refs.labels]
    new = [label for label in dict.fromkeys(refs.labels) if label not in labels]
    if missing or new:
        raise AdaptError("the confusion method adapts to a room: it needs references of every one of the model's "
                         f"labels and no new label ({'missing: ' + ', '.join(missing) if missing else ''}"
                         f"{'; ' if missing and new else ''}{'new: ' + ', '.join(new) if new else ''})")
    probabilities = reference_probabilities(model, base, refs)
    targets = torch.tensor([labels.index(label) for label in refs.labels])
    progress(0.3, "cross-validating on the references")
    right = torch.zeros(len(STRENGTHS))
    folds = reference_folds(targets, options.head_folds)
    for fold in folds:
        kept = torch.ones(len(targets), dtype=torch.bool)
        kept[fold] = False
        transition = fit_transition(probabilities[kept], targets[kept])
        right += torch.tensor([float((probabilities[fold] @ at_strength(transition, s).T).argmax(-1)
                                     .eq(targets[fold]).sum()) for s in STRENGTHS])
    record = cross_validation_record(right, len(targets), len(folds))
    transition = at_strength(fit_transition(probabilities, targets), record["strength"])
    model.classifier = ConfusionLayer(model.classifier, transition)
    progress(0.95, f"kept at strength {record['strength']}")
    return {"cross_validation": record}


def at_strength(transition: torch.Tensor, strength: float) -> torch.Tensor:
    """The identity mixed with the matrix: 0 leaves the model's probabilities as they are."""
    return (1 - strength) * torch.eye(len(transition)) + strength * transition
