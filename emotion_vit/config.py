"""Recipes: a small YAML file of argument values, with command-line flags on top.

A recipe's keys are the fields of `ModelArguments`, `DataArguments` and transformers'
`TrainingArguments` (and `base`, another recipe it starts from); the YAML sets their defaults and
any flag given on the command line wins, so `--config configs/x.yaml --num_train_epochs 1` changes
one value of the recipe.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser

from .arguments import DataArguments, EmotionTrainingArguments, ModelArguments


def training_parser() -> HfArgumentParser:
    parser = HfArgumentParser((ModelArguments, DataArguments, EmotionTrainingArguments),
                              description="Train an emotion classifier (see configs/ for recipes).")
    parser.add_argument("--config", type=Path, help="YAML recipe whose values become the defaults.")
    return parser


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A recipe's values. `base: other.yaml` (beside it) starts from another recipe, so that a variant
    declares only what it changes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ValueError(f"{path}: recipes that are each other's base")
    recipe = yaml.safe_load(path.read_text()) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping of argument names to values")
    if base := recipe.pop("base", None):
        recipe = {**load_recipe(path.parent / base, (*_seen, path.resolve())), **recipe}
    return recipe


def parse_training_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, EmotionTrainingArguments, dict]:
    """Dataclasses from recipe + flags, and the effective recipe (for the model card)."""
    parser = training_parser()
    config_path, rest = _pop_config(argv)
    recipe = load_recipe(config_path) if config_path else {}
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"{config_path}: unknown recipe keys {unknown}; see `python train.py train --help`")
    parser.set_defaults(**recipe)
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        # Lets `bf16: true` mean CPU autocast here (transformers refuses bf16 without a GPU otherwise).
        parser.set_defaults(use_cpu=True)
    model_args, data_args, training_args, _ = parser.parse_args_into_dataclasses(args=rest)  # _: --config
    given = {flag.lstrip("-").split("=", 1)[0].replace("-", "_") for flag in rest if flag.startswith("--")}
    effective = {**vars(model_args), **vars(data_args), **training_args.to_dict()}
    recipe = {key: effective[key] for key in [*recipe, *sorted(given - set(recipe))] if key in effective}
    return model_args, data_args, training_args, recipe


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take out --config FILE; turn the shorthand --push-to-hub USER/NAME into the Trainer's two flags."""
    rest, config, i = [], None, 0
    while i < len(argv):
        arg, value = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--config":
            config, i = value, i + 2
        elif arg.startswith("--config="):
            config, i = arg.split("=", 1)[1], i + 1
        elif arg in ("--push-to-hub", "--push_to_hub") and value is not None and "/" in value:
            rest, i = rest + ["--push_to_hub", "true", "--hub_model_id", value], i + 2
        else:
            rest, i = rest + [arg], i + 1
    return config, rest
