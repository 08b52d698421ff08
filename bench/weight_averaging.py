"""Checkpoint averaging: the mean of the weights at the last N epoch ends, for several N, on a split.

    python bench/weight_averaging.py --run runs/fer2013-pvt-long --last 1 5 10 20 30 45 60 \\
        [--weights DIR_OR_FILES ...] [--data ../shared/data/fer2013.zip] [--split validation]
    python bench/weight_averaging.py --between START END [--alphas 0 0.25 0.5 0.75 1]

`--between` interpolates instead: (1 - alpha) * START + alpha * END, two weight files or model folders of
one architecture (WiSE-FT, Wortsman et al. 2022: a fine-tune and the model it started from), END's folder
giving the config.

The epochs' weights are the run's `checkpoint-*/model.safetensors` (train with a --save_total_limit
that keeps the tail of the schedule), or `--weights` files or folders of them (`*.safetensors`, named
with their step, as a background copy kept them). N = 1 is the last epoch alone; what
`--average_last_epochs N` writes is the N row. One view and flip TTA, float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import torch
from machine import machine_info, machine_line
from paths import add_data_arguments
from safetensors.torch import load_file

from emotion_vit.data import load_emotion_dataset
from emotion_vit.evaluation import score_split
from emotion_vit.model import load_emotion_model
from emotion_vit.pipeline import set_inference_threads


def step_of(path: Path) -> int:
    """checkpoint-STEP/model.safetensors, or a copied file with the step in its name (step-STEP.safetensors)."""
    return int((re.findall(r"\d+", path.stem) or re.findall(r"\d+", path.parent.name))[-1])


def epoch_weights(run: Path, extra: list[str]) -> list[Path]:
    """Every epoch's weight file, oldest first, one per step."""
    files = [*run.glob("checkpoint-*/model.safetensors")]
    for item in map(Path, extra):
        files += sorted(item.glob("*.safetensors")) if item.is_dir() else [item]
    by_step = {step_of(path): path for path in files}
    return [by_step[step] for step in sorted(by_step)]


def mean_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, tensor in load_file(str(path)).items():
            total[name] = total[name] + tensor.float() if name in total else tensor.float()
    return {name: tensor / len(paths) for name, tensor in total.items()}


def weight_file(path: str) -> Path:
    return Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)


def interpolate(args) -> None:
    start, end = (load_file(str(weight_file(path))) for path in args.between)
    model = load_emotion_model(args.between[1])
    split = load_emotion_dataset(args.data)[args.split]
    rows = []
    print(f"(1 - alpha) * {args.between[0]} + alpha * {args.between[1]}")
    print("| alpha | one view | flip TTA |\n|---|---|---|")
    for alpha in args.alphas:
        model.model.load_state_dict({name: (1 - alpha) * start[name].float() + alpha * tensor.float()
                                     for name, tensor in end.items()})
        scores = {flip: score_split(dataclasses.replace(model, flip_tta=flip), split, desc=f"alpha {alpha}")["accuracy"]
                  for flip in (False, True)}
        rows.append({"alpha": alpha, "one_view": scores[False], "flip_tta": scores[True]})
        print(f"| {alpha:g} | {scores[False]:.2%} | {scores[True]:.2%} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(), "args": vars(args), "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="The run's output_dir (its checkpoints give the model's config).")
    parser.add_argument("--between", nargs=2, metavar=("START", "END"), help="Interpolate two models instead.")
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="--between: END's share of the weights.")
    parser.add_argument("--weights", nargs="*", default=[], help="More epoch weight files, or folders of them.")
    parser.add_argument("--last", nargs="+", type=int, default=[1, 5, 10, 20, 30])
    add_data_arguments(parser)
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    set_inference_threads()
    print(f"machine: {machine_line()}", flush=True)
    if args.between:
        return interpolate(args)
    if not args.run:
        parser.error("--run or --between is required")
    run = Path(args.run)
    files = epoch_weights(run, args.weights)
    steps = [step_of(path) for path in files]
    if not files:
        raise SystemExit(f"no epoch weights under {run} or --weights")
    model = load_emotion_model(sorted(run.glob("checkpoint-*"))[-1])
    split = load_emotion_dataset(args.data)[args.split]
    steps_per_epoch = min(b - a for a, b in zip(steps, steps[1:])) if len(steps) > 1 else steps[0]
    rows = []
    print("| epochs averaged | one view | flip TTA |\n|---|---|---|")
    for n in args.last:
        tail = steps[-n:]
        if n > len(files) or any(b - a != steps_per_epoch for a, b in zip(tail, tail[1:])):
            print(f"| last {n} | not kept: {len(files)} epochs' weights, or a gap among the last {n} | |")
            continue
        model.model.load_state_dict(mean_weights(files[-n:]))
        scores = {flip: score_split(dataclasses.replace(model, flip_tta=flip), split, desc=f"last {n}")["accuracy"]
                  for flip in (False, True)}
        first, last = steps[-n] // steps_per_epoch, steps[-1] // steps_per_epoch
        rows.append({"last": n, "epochs": [first, last], "one_view": scores[False], "flip_tta": scores[True]})
        print(f"| last {n} (epochs {first}-{last}) | {scores[False]:.2%} | {scores[True]:.2%} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(), "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
