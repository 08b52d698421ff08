"""From face images to model input: one preprocessing for training, evaluation and the app.

FER2013 faces are 48x48 grayscale. Every face, from the data set or cut out of a webcam
frame, goes the same way: to grayscale, resized to the model's input size, scaled to [0, 1],
normalised, repeated to 3 channels. The checkpoint's image processor config describes the
same steps (resize, rescale, normalise with equal per-channel statistics), so
`transformers.pipeline` gives the same input up to resampling details; the model itself
folds colour to luminance (see `emotion_vit.model.fold_grayscale_into_model`).
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image as PILImage

from .crop import CropGeometry


@dataclass(frozen=True)
class Preprocessing:
    """Resize and normalise faces for a model with square input `size`."""

    size: int
    mean: float = 0.5
    std: float = 0.5
    face_resolution: int | None = None  # the training faces' side (48 for FER2013), when below `size`

    @classmethod
    def from_processor(cls, processor) -> Preprocessing:
        size = processor.size
        side = size["height"] if "height" in size else size["shortest_edge"]
        mean, std = processor.image_mean, processor.image_std
        if len(set(mean)) != 1 or len(set(std)) != 1:
            raise ValueError("emotion models work on grayscale input: the image processor must use one mean "
                             f"and one std for all channels (got mean={mean}, std={std})")
        resolution = getattr(processor, "face_resolution", None)
        return cls(size=int(side), mean=float(mean[0]), std=float(std[0]),
                   face_resolution=int(resolution) if resolution else None)

    def gray(self, face: np.ndarray) -> np.ndarray:
        """An HxW uint8 luminance image from gray, RGB or RGBA uint8 input."""
        if face.ndim == 3 and face.shape[2] == 1:
            face = face[:, :, 0]
        if face.ndim == 3:
            face = cv2.cvtColor(face, cv2.COLOR_RGBA2GRAY if face.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
        return face

    def resize(self, gray: np.ndarray) -> np.ndarray:
        """To `size` x `size`. A face larger than `face_resolution` is first reduced to it: the model learned
        from 48-pixel faces enlarged to 64, and a sharp camera crop shown with more detail than that loses
        accuracy (1.2 points on PublicTest faces in frames, docs/benchmarks.md)."""
        resolution = self.face_resolution
        if resolution and min(gray.shape[:2]) > resolution:
            gray = cv2.resize(gray, (resolution, resolution), interpolation=cv2.INTER_AREA)
        if gray.shape[:2] == (self.size, self.size):
            return gray
        shrinking = gray.shape[0] > self.size or gray.shape[1] > self.size
        return cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def normalize(self, resized: list[np.ndarray]) -> torch.Tensor:
        """uint8 SxS images -> float tensor (N, 3, S, S)."""
        batch = torch.from_numpy(np.stack(resized)).float().div_(255.0).sub_(self.mean).div_(self.std)
        return batch.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()

    def __call__(self, faces: list[np.ndarray]) -> torch.Tensor:
        return self.normalize([self.resize(self.gray(face)) for face in faces])


class DetectorFraming(A.ImageOnlyTransform):
    """Re-frame a data-set face as the live crop frames it: through a detector's box and `CropGeometry`.

    `samples` are measured per-face ratios (scale, shift_x, shift_y) of the data set's square to a
    detector's box (`bench/crop_geometry.py` writes them): each call draws one face's ratios, rebuilds
    the box the detector would have given for this face, cuts the geometry's square from it (outside
    the image: the border replicated, as in the app) and resizes it back. The model so learns the
    detector's jitter around the data set's framing, not only the framing itself.
    """

    def __init__(self, samples, geometry: CropGeometry | None = None, p: float = 0.5):
        super().__init__(p=p)
        self.samples = np.asarray(samples, dtype=np.float64).reshape(-1, 3)
        self.geometry = geometry or CropGeometry()

    @classmethod
    def from_file(cls, path: str | Path, p: float = 0.5) -> DetectorFraming:
        return cls(json.loads(Path(path).read_text())["samples"], p=p)

    def get_params(self) -> dict:
        return {"ratios": self.samples[int(self.random_generator.integers(len(self.samples)))]}

    def apply(self, img: np.ndarray, ratios=(1.0, 0.0, 0.0), **params) -> np.ndarray:
        height, width = img.shape[:2]
        scale, shift_x, shift_y = ratios
        size = width / scale  # the box size the detector would give this face
        box_cx, box_cy = width / 2 - shift_x * size, height / 2 - shift_y * size
        half = box_cx - size / 2, box_cy - size / 2, box_cx + size / 2, box_cy + size / 2
        x1, y1, x2, y2 = self.geometry.square(half)
        k = width / (x2 - x1)  # the square -> the image's own size
        matrix = np.array([[k, 0, -x1 * k], [0, k * height / width, -y1 * k * height / width]])
        return cv2.warpAffine(img, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("geometry",)


def poor_camera(p: float) -> A.Sequential:
    """What a classroom webcam does to a face at the back of a dim room, with probability `p`: fewer
    pixels (16-32 across a 48 px face; faces in a 29-person photo are ~40 px), darker midtones and
    less contrast, sensor noise, JPEG. Each part is drawn on its own, so most degraded faces get
    two or three of them."""
    return A.Sequential([
        A.Downscale(scale_range=(1 / 3, 2 / 3), interpolation_pair={"downscale": cv2.INTER_AREA,
                                                                   "upscale": cv2.INTER_LINEAR}, p=0.6),
        A.RandomGamma(gamma_limit=(100, 220), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=(-0.5, 0.0), contrast_limit=(-0.5, 0.0), p=0.5),
        A.GaussNoise(std_range=(0.01, 0.06), p=0.5),
        A.ImageCompression(quality_range=(30, 80), p=0.5),
    ], p=p)


def training_augmentation(strength: float = 1.0, seed: int | None = None,
                          framing: DetectorFraming | None = None, camera: float = 0.0) -> A.Compose:
    """Augmentation for 48x48 faces: small geometric jitter, flips, lighting, occlusion.

    Faces in FER2013 are already roughly aligned, so geometry stays gentle (scale, shift and
    rotation of a few percent and degrees); lighting and occlusion (erasing) model what a
    classroom webcam adds. `strength` scales the ranges; 0 turns them off. A `seed` makes
    the views repeatable (albumentations keeps its own random state, untouched by torch's or numpy's).
    `framing` (first, when given) re-frames faces as the live detector and crop would; `camera` is
    the share of faces degraded as a poor webcam would (`poor_camera`, last).
    """
    first = [framing] if framing is not None else []
    last = [poor_camera(camera)] if camera > 0 else []
    if strength <= 0:
        return A.Compose([*first, *last], seed=seed)
    s = strength
    return A.Compose([
        *first,
        A.Affine(scale=(1 - 0.15 * s, 1 + 0.15 * s), translate_percent=(-0.08 * s, 0.08 * s),
                 rotate=(-12 * s, 12 * s), border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=0.8),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.4), hole_width_range=(0.1, 0.4),
                        fill="random_uniform", p=0.5 * min(s, 1.0)),
        *last,
    ], seed=seed)


def seed_augmentation(augmentation: A.Compose, seed: int) -> None:
    """One numpy and one python generator for every transform of the pipeline, seeded.

    albumentations' own `seed=` gives each transform a generator of the same seed, so their
    draws are correlated (a flip and a dropout deciding from the same numbers); one shared
    stream avoids that and is a single state to save.
    """
    augmentation.set_random_state(np.random.default_rng(seed), random.Random(seed))


def train_transform(preprocessing: Preprocessing, augmentation: A.Compose):
    """A `Dataset.set_transform` function: augmented, preprocessed pixel_values and labels.

    In a DataLoader worker (`dataloader_num_workers` > 0, as on a GPU) the augmentation is first
    reseeded from the worker's own seed, which torch draws afresh for each worker and epoch: forked
    workers would otherwise share the parent's generator, so every worker, every epoch, would replay
    the same draws."""
    seeded_for = None

    def transform(batch):
        nonlocal seeded_for
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.seed != seeded_for:
            seed_augmentation(augmentation, worker.seed % 2**32)
            seeded_for = worker.seed
        faces = [augmentation(image=preprocessing.gray(image_array(image)))["image"] for image in batch["image"]]
        return {"pixel_values": preprocessing(faces), "labels": torch.tensor(batch["label"])}
    return transform


def eval_transform(preprocessing: Preprocessing):
    """A `Dataset.set_transform` function without augmentation."""
    def transform(batch):
        return {"pixel_values": preprocessing([image_array(image) for image in batch["image"]]),
                "labels": torch.tensor(batch["label"])}
    return transform


def image_array(image) -> np.ndarray:
    """A data-set image (PIL or array) as a uint8 array Preprocessing accepts (gray, RGB or RGBA)."""
    if isinstance(image, PILImage.Image):
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        return np.asarray(image)
    return np.asarray(image)


@dataclass
class BatchMixer:
    """With probability `prob`, mixes a training batch by MixUp or CutMix.

    Mixed batches carry soft labels (N, num_labels); the loss in `emotion_vit.training`
    takes both hard and soft labels. Applied in the training step only, never to evaluation.
    """

    num_labels: int
    prob: float = 0.0
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prob <= 0 or torch.rand(()) >= self.prob or len(labels) < 2:
            return pixel_values, labels
        targets = torch.nn.functional.one_hot(labels, self.num_labels).to(pixel_values.dtype)
        partner = torch.randperm(len(labels), device=labels.device)
        if torch.rand(()) < 0.5:  # MixUp: blend whole images
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            pixel_values = lam * pixel_values + (1 - lam) * pixel_values[partner]
        else:  # CutMix: paste a box from the partner image
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            height, width = pixel_values.shape[-2:]
            box_h, box_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
            top, left = np.random.randint(0, height - box_h + 1), np.random.randint(0, width - box_w + 1)
            pixel_values = pixel_values.clone()
            pixel_values[..., top : top + box_h, left : left + box_w] = pixel_values[partner][
                ..., top : top + box_h, left : left + box_w
            ]
            lam = 1 - box_h * box_w / (height * width)
        return pixel_values, lam * targets + (1 - lam) * targets[partner]


@dataclass
class PairClasses:
    """Class augmentation (ALICE; Peng et al., "Few-Shot Class-Incremental Learning from an Open-Set
    Perspective", ECCV 2022): blends of two faces of different classes are added to a training batch,
    each unordered pair of classes a training class of its own (outputs `num_labels` onwards).

    A classifier taught only its own classes lets its features collapse onto them, and what tells a
    new expression apart is what it learned to ignore; separating the blends as well keeps features
    that a few-shot adapter can use for a class the model never saw. The extra outputs exist only
    while training (`emotion_vit.model.keep_labels` drops them).
    """

    num_labels: int
    share: float = 0.0  # blends added, as a share of the batch
    alpha: float = 20.0  # Beta(alpha, alpha) blend weight, kept within [0.4, 0.6] as ALICE does

    def __post_init__(self):
        self.pairs = list(itertools.combinations(range(self.num_labels), 2))
        self.index = {pair: self.num_labels + i for i, pair in enumerate(self.pairs)}

    def names(self, labels: list[str]) -> list[str]:
        """Names of the pair classes, in output order after `labels`."""
        return [f"{labels[a]}+{labels[b]}" for a, b in self.pairs]

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = round(self.share * len(labels))
        if count == 0 or labels.dim() != 1:
            return pixel_values, labels
        partner = torch.randperm(len(labels), device=labels.device)
        first = torch.nonzero(labels != labels[partner]).flatten()[:count]
        if len(first) == 0:  # a batch of one class has no pairs
            return pixel_values, labels
        second = partner[first]
        weight = torch.distributions.Beta(self.alpha, self.alpha).sample((len(first),)).to(pixel_values.device)
        weight = torch.where((weight < 0.4) | (weight > 0.6), torch.full_like(weight, 0.5), weight)
        weight = weight.to(pixel_values.dtype).view(-1, *[1] * (pixel_values.dim() - 1))
        blends = weight * pixel_values[first] + (1 - weight) * pixel_values[second]
        low, high = torch.minimum(labels[first], labels[second]), torch.maximum(labels[first], labels[second])
        pair_labels = torch.tensor([self.index[(int(a), int(b))] for a, b in zip(low, high)],
                                   dtype=labels.dtype, device=labels.device)
        return torch.cat([pixel_values, blends]), torch.cat([labels, pair_labels])
