"""Training and evaluation images/s of each recipe, through the real Trainer and data pipeline.

    python bench/train_throughput.py configs/fer2013-pvt.yaml configs/vit-base-in21k.yaml
    python bench/train_throughput.py configs/fer2013-pvt-long.yaml --precision bf16 \
        --model-configs '{}' '{"depths": [2, 2, 6, 2]}' '{"hidden_sizes": [32, 64, 160, 384]}'

Each recipe trains for `--steps` steps on FER2013 (augmentation, loss, optimiser: all as in a real
run) and evaluates `--eval-images` images; the Trainer's own samples/s are reported. A recipe that
fine-tunes a hub checkpoint is built from its architecture's config when the hub is out of reach
(same compute, random weights). `--precision fp32 bf16` measures both: bf16 is the Trainer's
autocast, on a CPU too (fast where the CPU has AVX512-BF16 or AMX).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from machine import machine_line
from paths import FER2013
from transformers import AutoConfig, Trainer

from emotion_vit.config import parse_training_args
from emotion_vit.data import load_emotion_dataset
from emotion_vit.model import build_image_processor, build_model
from emotion_vit.trainer import EmotionLoss, class_weights, collate
from emotion_vit.transforms import Preprocessing, eval_transform, train_transform, training_augmentation


def model_for(model_args, labels):
    try:
        source = "pretrained weights" if model_args.model_name_or_path else "new (trained from scratch)"
        return build_model(tuple(labels), model_args.model_name_or_path, model_args.model_type,
                           model_args.model_config, model_args.image_size), source
    except OSError:  # offline: the same architecture with random weights
        config = AutoConfig.for_model(model_args.model_type).to_dict()
        config.update(model_args.model_config, image_size=model_args.image_size)
        for key in ("model_type", "transformers_version", "architectures", "id2label", "label2id", "num_labels"):
            config.pop(key, None)
        return build_model(tuple(labels), None, model_args.model_type, config, model_args.image_size), \
            "architecture from config (hub unreachable)"


def measure(recipe: str, dataset, steps: int, eval_images: int, precision: str, model_config: str | None) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        model_args, data_args, args, _ = parse_training_args(
            ["--config", recipe, "--output_dir", output_dir, "--max_steps", str(steps), "--eval_strategy", "no",
             "--save_strategy", "no", "--load_best_model_at_end", "false", "--disable_tqdm", "true",
             "--logging_steps", "1000000", "--bf16", str(precision == "bf16"), "--fp16", "false",
             *(["--model_config", model_config] if model_config else [])])
        labels = dataset["train"].features["label"].names
        model, source = model_for(model_args, labels)
        processor = build_image_processor(model_args.image_size, model_args.image_mean, model_args.image_std)
        preprocessing = Preprocessing.from_processor(processor)
        train = dataset["train"].select(range(steps * args.per_device_train_batch_size))
        loss = EmotionLoss(class_weights(train["label"], len(labels), data_args.class_weighting),
                           args.label_smoothing_factor)
        train.set_transform(train_transform(preprocessing, training_augmentation(data_args.augmentation_strength)))
        validation = dataset["validation"].select(range(eval_images))
        validation.set_transform(eval_transform(preprocessing))
        trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate, compute_loss_func=loss)
        trained = trainer.train().metrics
        evaluated = trainer.evaluate(validation)
        return {
            "recipe": Path(recipe).name,
            "model": f"{model_args.model_type}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
            f"{model_args.image_size} px" + (f", {model_config}" if model_config else ""),
            "weights": source,
            "batch": args.per_device_train_batch_size,
            "precision": precision,
            "train_images_per_s": trained["train_samples_per_second"],
            "eval_images_per_s": evaluated["eval_samples_per_second"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--data", default=str(FER2013))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-images", type=int, default=512)
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="default: bf16 on a GPU that supports it, else fp32")
    parser.add_argument("--model-configs", nargs="+", default=[None], metavar="JSON",
                        help="Architecture variants: each recipe once per --model_config override "
                             "(e.g. '{}' '{\"depths\": [2, 2, 6, 2]}'), in turn.")
    args = parser.parse_args()
    print(f"machine: {machine_line()}; device: {'cuda' if torch.cuda.is_available() else 'cpu'}")
    dataset = load_emotion_dataset(args.data)
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    precisions = args.precision or ["bf16" if gpu_bf16 else "fp32"]
    rows = [measure(recipe, dataset, args.steps, args.eval_images, precision, model_config)
            for recipe in args.recipes for precision in precisions for model_config in args.model_configs]
    print("\n| recipe | model | weights | batch | precision | train images/s | eval images/s |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['recipe']} | {row['model']} | {row['weights']} | {row['batch']} | {row['precision']} | "
              f"{row['train_images_per_s']:.1f} | {row['eval_images_per_s']:.1f} |")


if __name__ == "__main__":
    main()
