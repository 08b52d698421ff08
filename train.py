"""Train, evaluate and publish emotion models.

    python train.py --config configs/fer2013-pvt.yaml               # train a recipe
    python train.py --config configs/tiny.yaml --data faces.zip --num_train_epochs 1
    python train.py evaluate --model models/emotion-vit-fer2013 --data ../shared/data/fer2013.zip --split validation
"""

import argparse
import logging
import sys

from emotion_vit.config import parse_training_args
from emotion_vit.data import DataOptions
from emotion_vit.evaluation import evaluate_model, format_results


def main(argv: list[str]) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if argv and argv[0] == "evaluate":
        return evaluate_command(argv[1:])
    from emotion_vit.training import train
    model_args, data_args, training_args, recipe = parse_training_args(argv)
    train(model_args, data_args, training_args, recipe)


def evaluate_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="train.py evaluate", description="Score a model on a split of a data source.")
    parser.add_argument("--model", required=True, help="Model folder or hub id.")
    parser.add_argument("--data", required=True, help="Image-folder tree or archive, fer2013.csv, or hub data set.")
    parser.add_argument("--split", default="validation", help="train, validation (FER2013 PublicTest) or test (PrivateTest).")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output-dir", help="Also write eval_<split>.json and the confusion matrix (PNG, JSON) here.")
    parser.add_argument("--skip-bad-images", action="store_true", help="Skip and count unreadable images.")
    args = parser.parse_args(argv)
    results = evaluate_model(args.model, args.data, args.split, args.batch_size,
                             DataOptions(skip_bad_images=args.skip_bad_images), args.output_dir)
    print(format_results(results))


if __name__ == "__main__":
    main(sys.argv[1:])
