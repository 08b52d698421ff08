"""The emotion model: build it, fold grayscale into it, load it back for inference.

A model is any `transformers` image classifier: a hub checkpoint to fine-tune (for example
`google/vit-base-patch16-224-in21k`) or a Vision Transformer built from a config (type and
sizes in the recipe). Every checkpoint carries the canonical FER2013 label maps and a
`ViTImageProcessor` config, so `pipeline("image-classification", model=DIR)` runs it with
no project code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# The PIL backend of ViTImageProcessor (saved as "ViTImageProcessor"): no torchvision here, by design.
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, ViTImageProcessorPil

from .labels import EMOTIONS, label_maps
from .transforms import Preprocessing

# ITU-R BT.601 luma, the weights of PIL's convert("L") and OpenCV's RGB2GRAY.
LUMA = (0.299, 0.587, 0.114)


def build_model(labels: tuple[str, ...] = EMOTIONS, model_name_or_path: str | None = None,
                model_type: str = "vit", model_config: dict | None = None, image_size: int = 48):
    """A classifier for `labels`: pretrained from `model_name_or_path` (`model_config` overriding its config's
    values, such as drop_path_rate), else new from `model_config`."""
    id2label, label2id = label_maps(labels)
    if model_name_or_path:
        return AutoModelForImageClassification.from_pretrained(
            model_name_or_path, num_labels=len(labels), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True, **(model_config or {}))  # the pretrained head has other classes
    config = AutoConfig.for_model(model_type, num_labels=len(labels), id2label=id2label, label2id=label2id,
                                  **_with_image_size(model_type, image_size, model_config or {}))
    return AutoModelForImageClassification.from_config(config)


@torch.no_grad()
def keep_labels(model: nn.Module, labels: list[str]) -> None:
    """Cut the classifier to the outputs named `labels`, in that order, and the label maps to match. A model
    trained with extra outputs (pair classes, `emotion_vit.transforms.PairClasses`) is written and served so,
    and a teacher that knows more classes than its student answers so: its probabilities renormalised over
    the student's classes."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__}: cutting outputs needs a classifier that is one linear layer")
    index = {name: int(i) for i, name in model.config.id2label.items()}
    if missing := [name for name in labels if name not in index]:
        raise ValueError(f"{type(model).__name__} has no output for {', '.join(missing)}")
    rows = torch.tensor([index[name] for name in labels], device=head.weight.device)
    kept = nn.Linear(head.in_features, len(labels), bias=head.bias is not None)
    kept.to(head.weight.device, head.weight.dtype)
    kept.weight.copy_(head.weight[rows])
    if head.bias is not None:
        kept.bias.copy_(head.bias[rows])
    model.classifier = kept
    model.num_labels = model.config.num_labels = len(labels)
    model.config.id2label, model.config.label2id = label_maps(labels)


def _with_image_size(model_type: str, image_size: int, model_config: dict) -> dict:
    """Most vision configs take image_size; pass it unless the recipe set it or the type has none."""
    config = dict(model_config)
    if "image_size" in AutoConfig.for_model(model_type).to_dict():
        config.setdefault("image_size", image_size)
    return config


def build_image_processor(image_size: int, mean: float = 0.5, std: float = 0.5,
                          face_resolution: int | None = None) -> ViTImageProcessorPil:
    """The processor config saved with every checkpoint: resize, rescale, normalise (equal per channel), and
    `face_resolution`, the training faces' side when it is below `image_size` (see `Preprocessing.resize`)."""
    processor = ViTImageProcessorPil(do_resize=True, size={"height": image_size, "width": image_size}, resample=2,
                                     do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                     image_mean=[mean] * 3, image_std=[std] * 3)
    if face_resolution is not None and face_resolution < image_size:
        processor.face_resolution = int(face_resolution)  # an extra key of preprocessor_config.json
    return processor


def first_pixel_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that reads the RGB pixels (patch embedding or stem) in a vision classifier."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return module
    raise ValueError(f"{type(model).__name__}: no convolution over 3 input channels found")


@torch.no_grad()
def fold_grayscale_into_model(model: nn.Module) -> None:
    """Make the model see luminance, whatever colours it is given.

    Trained on grayscale replicated to RGB, the first convolution only ever saw R = G = B, so
    only the sum of its three channel kernels matters. Re-spreading that sum by the luma
    weights leaves every grayscale output unchanged and makes a colour input give exactly
    the output of its grayscale version (the normalisation has equal per-channel
    statistics and the luma weights sum to 1). `pipeline()` users then need no grayscale step.
    """
    conv = first_pixel_conv(model)
    summed = conv.weight.sum(dim=1, keepdim=True)
    luma = torch.tensor(LUMA, dtype=conv.weight.dtype).view(1, 3, 1, 1)
    conv.weight.copy_(summed * luma)


@dataclass
class EmotionModel:
    """A loaded classifier with its preprocessing, ready for batched inference."""

    model: nn.Module
    preprocessing: Preprocessing
    labels: list[str]
    name: str
    sha256: str
    flip_tta: bool = False  # also classify each face mirrored and average: steadier, twice the compute
    bf16: bool = False  # matrix products in bfloat16 (CPU autocast): fast only where the CPU has it natively

    @torch.inference_mode()
    def predict_proba(self, faces: list) -> torch.Tensor:
        """Class probabilities (N, num_labels) for N face crops (uint8 arrays), in ONE forward pass."""
        if not faces:
            return torch.empty(0, len(self.labels))
        pixels = self.preprocessing(faces)
        if self.flip_tta:  # the mirrored copies ride in the same batch
            pixels = torch.cat([pixels, pixels.flip(-1)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(pixel_values=pixels).logits
        probabilities = logits.float().softmax(dim=-1)
        return probabilities.view(2, len(faces), -1).mean(0) if self.flip_tta else probabilities


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Elsewhere autocast
    emulates it, slower than float32."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:  # not Linux: stay in float32
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def load_emotion_model(name_or_path: str | Path) -> EmotionModel:
    """Load a checkpoint (local folder or hub id) for inference; a missing one is a clear error."""
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise FileNotFoundError(f"{local}: not a model folder (no config.json)")
    if not local.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"model folder not found: {local}")
    try:
        model = AutoModelForImageClassification.from_pretrained(name)
        processor = AutoImageProcessor.from_pretrained(name)
    except OSError as error:
        raise FileNotFoundError(f"could not load model {name!r}: {error}") from error
    model.eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return EmotionModel(model=model, preprocessing=Preprocessing.from_processor(processor), labels=labels,
                        name=name, sha256=weights_sha256(local) if local.exists() else hub_weights_id(model))


def weights_sha256(model_dir: Path) -> str:
    """Hash of a checkpoint's weight files (model*.safetensors, not the feature statistics beside them):
    identifies the exact base model of an adapter."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("model*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def hub_weights_id(model: nn.Module) -> str:
    """What identifies a hub model's weights: its commit hash, else (a revision not recorded) a sha256 of
    the weights themselves, never one shared value for every such model."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return json.dumps(commit)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
