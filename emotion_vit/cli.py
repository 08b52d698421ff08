"""The command line: `emotion-vit COMMAND` (installed), or `python app.py` / `python train.py COMMAND`.

    emotion-vit app [--model DIR] ...            the Gradio app and API        (= python app.py)
    emotion-vit train --config RECIPE ...        train a recipe                (= python train.py --config ...)
    emotion-vit evaluate --model DIR --data PATH                             (= python train.py evaluate ...)
    emotion-vit evaluate-frames | adapt | feature-stats | push ...

Each command imports what it needs when it runs, so `--help` is quick and `push` loads no training code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

COMMANDS = {
    "app": "the Gradio app: live webcam, photos, adapters, the JSON API",
    "train": "train a recipe with the Hugging Face Trainer (configs/*.yaml; `train --help`: every Trainer option)",
    "evaluate": "score a model on a split of a data source (face crops)",
    "evaluate-frames": "score a model through the app's whole path on labelled frames",
    "adapt": "build a few-shot adapter from labelled reference photos",
    "feature-stats": "add feature statistics (for adapters) to a model folder",
    "push": "upload a model or adapter folder to the Hugging Face hub",
}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Settings of the live stream and of visitors' adapters: no part of scoring a labelled photo.
LIVE_ONLY_SETTINGS = ("max_side", "smoothing", "stream_every", "stream_time_limit", "adapters_dir",
                      "max_adapters_per_key", "max_adapter_labels", "max_references")


def usage(program: str) -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {program} COMMAND [options]   ({program} COMMAND --help for a command's options)", "",
             "commands:"] + [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    if program == "train.py":
        lines += ["", "train is the default: `python train.py --config configs/tiny.yaml --num_train_epochs 1` trains;",
                  "`python train.py train --help` lists every recipe and Trainer option."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, program: str = "emotion-vit") -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(program))
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"{program}: unknown command {command!r}\n\n{usage(program)}")
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    handlers = {"app": app_command, "train": train_command, "evaluate": evaluate_command,
                "evaluate-frames": evaluate_frames_command, "adapt": adapt_command,
                "feature-stats": feature_stats_command, "push": push_command}
    handlers[command](rest)


def train_script(argv: list[str]) -> None:
    """`python train.py`: a command name first, else training flags (`python train.py --config RECIPE`)."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        return main(argv, program="train.py")
    main(["train", *argv], program="train.py")


def train_command(argv: list[str]) -> None:
    from emotion_vit.arguments import MASKED_IMAGE_MODELING
    from emotion_vit.config import parse_training_args, training_parser
    from emotion_vit.pretraining import pretrain
    from emotion_vit.training import train

    if argv in (["-h"], ["--help"]):
        training_parser().print_help()
        return
    model_args, data_args, training_args, recipe = parse_training_args(argv)
    (pretrain if model_args.objective == MASKED_IMAGE_MODELING else train)(model_args, data_args, training_args, recipe)


def app_parser() -> argparse.ArgumentParser:
    from emotion_vit.flags import add_flags
    from emotion_vit.service import AppSettings
    from emotion_vit.webapp import MAX_FILE_MB, QUEUE_SIZE

    parser = argparse.ArgumentParser(prog="emotion-vit app",
                                     description="Live face-emotion recognition (Gradio app and API).")
    serving = parser.add_argument_group("serving")
    serving.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                         help="Address to listen on (0.0.0.0 in containers; env GRADIO_SERVER_NAME; "
                              "default: %(default)s).")
    serving.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                         help="Port (env GRADIO_SERVER_PORT; default: %(default)s).")
    serving.add_argument("--share", action="store_true", help="Also open a temporary public gradio.live link.")
    serving.add_argument("--max-file-mb", type=int, default=MAX_FILE_MB,
                         help="Largest upload accepted, in MB (default: %(default)s).")
    serving.add_argument("--queue-size", type=int, default=QUEUE_SIZE,
                         help="Requests that may wait for the model; more are refused (default: %(default)s).")
    serving.add_argument("--threads", type=int,
                         help="Threads for the classifier (default: OMP_NUM_THREADS, else the CPU cores, up to 4).")
    add_flags(parser, AppSettings, "what the app serves and how")
    return parser


def app_command(argv: list[str]) -> None:
    from emotion_vit.flags import from_flags
    from emotion_vit.pipeline import set_inference_threads
    from emotion_vit.service import AppSettings, EmotionService
    from emotion_vit.webapp import build_app, launch, limit_malloc_arenas

    limit_malloc_arenas()  # first: the heaps made while the model loads would stay (torch, onnxruntime threads)
    args = app_parser().parse_args(argv)
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)  # python app.py comes here, not through main
    set_inference_threads(args.threads)
    service = EmotionService(from_flags(AppSettings, args))
    launch(build_app(service), args.host, args.port, share=args.share, max_file_mb=args.max_file_mb,
           queue_size=args.queue_size)


def add_exclude_labels_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exclude-labels", nargs="*", default=[], help=(
        "Classes to leave out of the data: those a held-out-class model was trained without (--exclude_labels)."))


def evaluate_command(argv: list[str]) -> None:
    from emotion_vit.adapt import AdaptError, load_adapter
    from emotion_vit.data import DataOptions
    from emotion_vit.evaluation import evaluate_model, format_results
    from emotion_vit.model import load_emotion_model

    parser = argparse.ArgumentParser(prog="emotion-vit evaluate", description="Score a model on a split of data.")
    parser.add_argument("--model", required=True, help="Model folder or hub id.")
    parser.add_argument("--data", required=True, help="Image-folder tree or archive, fer2013.csv, or hub data set.")
    parser.add_argument("--split", default="validation",
                        help="train, validation (FER2013 PublicTest) or test (PrivateTest) (default: %(default)s).")
    parser.add_argument("--batch-size", type=int, default=256, help="Faces per forward pass (default: %(default)s).")
    parser.add_argument("--output-dir", help="Also write eval_<split>.json and the confusion matrix (PNG, JSON) here.")
    parser.add_argument("--skip-bad-images", action="store_true", help="Skip and count unreadable images.")
    parser.add_argument("--flip-tta", action="store_true", help="Average each face's prediction with its mirror image.")
    parser.add_argument("--adapter", help=("An adapter folder made for MODEL (train.py adapt): score the adapted "
                                           "model; a label the data lacks is reported by the faces it takes."))
    add_exclude_labels_flag(parser)
    args = parser.parse_args(argv)
    options = DataOptions(skip_bad_images=args.skip_bad_images, exclude_labels=args.exclude_labels)
    try:
        model = load_emotion_model(args.model)
        if args.adapter:
            model = load_adapter(model, args.adapter)
        results = evaluate_model(model, args.data, args.split, args.batch_size, options, args.output_dir,
                                 args.flip_tta)
    except (AdaptError, FileNotFoundError, ValueError) as error:  # a missing model, adapter or split: one line
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(format_results(results))


def evaluate_frames_command(argv: list[str]) -> None:
    from emotion_vit.flags import add_flags, from_flags
    from emotion_vit.frame_evaluation import (
        MATCH_MODES,
        evaluate_frames,
        format_frame_results,
        is_photo_folder,
        photo_folder_frames,
        placed_frames,
    )
    from emotion_vit.frames import FrameOptions
    from emotion_vit.service import AppSettings, EmotionService

    parser = argparse.ArgumentParser(prog="emotion-vit evaluate-frames", description=(
        "Score the app's whole path (detector, crop, preprocessing, flip TTA as served) on labelled frames: "
        "a folder of full-frame photos DATA/<label>/<image>, or the faces of a split of any data source, "
        "each placed into a frame."))
    parser.add_argument("--data", required=True, help="Photo folder <label>/<image>, or a data source of face crops.")
    parser.add_argument("--split", default="validation",
                        help="Face crops: the split to place into frames (default: %(default)s).")
    parser.add_argument("--limit", type=int, help="Face crops: score this many (a seeded sample; default: all).")
    parser.add_argument("--seed", type=int, default=0,
                        help="Face crops: seed of placement and sample (default: %(default)s).")
    parser.add_argument("--match", choices=MATCH_MODES, default="largest",
                        help="The face scored: the largest, or the one at the placed face's box (%(default)s).")
    parser.add_argument("--output-dir", help="Also write eval_frames.json and the confusion matrix (PNG, JSON) here.")
    parser.add_argument("--adapter", help=("An adapter folder made for the model (train.py adapt): score the app's "
                                           "path with it; a label the data lacks is reported by the faces it takes."))
    add_flags(parser, AppSettings, "the app's settings, as it serves them", skip=LIVE_ONLY_SETTINGS)
    args = parser.parse_args(argv)
    adapter = Path(args.adapter) if args.adapter else None
    where = {"adapters_dir": str(adapter.parent)} if adapter else {}  # the service finds adapters by name there
    try:
        service = EmotionService(from_flags(AppSettings, args, **where))
        if is_photo_folder(args.data):
            skipped: list[str] = []
            frames = photo_folder_frames(args.data, skipped)
            total, description = len(frames), f"photos in {args.data}"
            for message in skipped:
                print(f"skipped {message}")
        else:
            total, frames = placed_frames(args.data, args.split, FrameOptions(seed=args.seed), args.limit)
            description = f"{args.data} [{args.split}] faces placed in frames (seed {args.seed})"
        results = evaluate_frames(service, frames, args.match, total, args.output_dir, description,
                                  adapter.name if adapter else None)
    except (FileNotFoundError, ValueError) as error:  # a missing model or data, an unknown label: one line
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(format_frame_results(results))


def adapt_parser() -> argparse.ArgumentParser:
    from emotion_vit.adapt import AdaptOptions
    from emotion_vit.crop import ALIGN_FACES
    from emotion_vit.flags import add_flags

    parser = argparse.ArgumentParser(prog="emotion-vit adapt", description=(
        "Build an adapter from a few labelled reference images: REFERENCES/<label>/<images>. "
        "Known labels (happy, surprised, ...) refine the base model; other labels become new classes."))
    parser.add_argument("--base", default="models/emotion-vit-fer2013",
                        help="Base model folder or hub id (default: %(default)s).")
    parser.add_argument("--references", required=True, help="Folder of label folders with images of any size.")
    parser.add_argument("--name", required=True, help="Adapter name.")
    parser.add_argument("--adapters-dir", default="adapters", help="Where adapters are saved (default: %(default)s).")
    parser.add_argument("--already-cropped", action="store_true", help="References are face crops: skip detection.")
    parser.add_argument("--align", action=argparse.BooleanOptionalAction, default=ALIGN_FACES,
                        help="Cut the references aligned by the eyes or not, as the app that uses the adapter "
                             "cuts faces (default: %(default)s, the app's).")
    add_flags(parser, AdaptOptions, "how the adapter is built")
    checks = parser.add_argument_group("checking it on labelled faces of the base model's classes")
    checks.add_argument("--calibration-faces", metavar="DATA", help=(
        "Any data source of labelled faces (e.g. fer2013.zip, or a folder <label>/<image> of your own): the base "
        "model and the adapter label a sample of them, and the report says, per class, how often each labels it "
        "right and how often a new label takes its faces. The only such check for lora, which moves the features."))
    checks.add_argument("--calibration-split", default="validation",
                        help="The split of those faces to sample (default: %(default)s; FER2013: PublicTest).")
    checks.add_argument("--calibration-per-class", type=int, default=100,
                        help="Faces sampled per class, seeded (default: %(default)s).")
    return parser


def adapt_command(argv: list[str]) -> None:
    from emotion_vit.adapt import (
        AdaptError,
        AdaptOptions,
        FeatureStatsError,
        adapted_model,
        adapter_size_bytes,
        build_adapter,
        calibration_warnings,
        check_lines,
        check_on_faces,
        load_calibration_faces,
        load_references,
        save_adapter,
    )
    from emotion_vit.detect import create_detector
    from emotion_vit.flags import from_flags
    from emotion_vit.model import load_emotion_model

    parser = adapt_parser()
    args = parser.parse_args(argv)
    try:
        base = load_emotion_model(args.base)
        faces = None  # read before the build: a wrong path fails in seconds, not after it
        if args.calibration_faces:
            faces = load_calibration_faces(args.calibration_faces, args.calibration_split, base.labels)
        detector = None if args.already_cropped else create_detector("retinaface")
        refs = load_references(args.references, detector, align=args.align)
        for skipped in refs.skipped:
            print(f"skipped {skipped}")
        print(f"references per label: {refs.counts()}")
        model, metadata = build_adapter(base, refs, args.name, from_flags(AdaptOptions, args))
    except (AdaptError, FeatureStatsError, FileNotFoundError, ValueError) as error:  # bad input: one line, exit 2
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if faces is not None:
        record = check_on_faces(base, adapted_model(base, model, metadata), faces, args.calibration_per_class)
        metadata["calibration_faces"] = {"data": Path(args.calibration_faces).name, "split": args.calibration_split,
                                         **record}
        metadata["warnings"] = metadata.get("warnings", []) + calibration_warnings(record, metadata["method"])
    folder = save_adapter(model, metadata, Path(args.adapters_dir) / args.name)
    print(f"adapter {args.name!r} ({metadata['method']}): labels {metadata['labels']}, "
          f"{metadata['training_steps']} steps in {metadata['seconds']:.1f} s, "
          f"{adapter_size_bytes(folder) / 1024:.0f} KiB at {folder}")
    for line in check_lines(metadata):
        print(f"  {line}")


def feature_stats_command(argv: list[str]) -> None:
    from emotion_vit.data import DataOptions, load_emotion_dataset
    from emotion_vit.features import compute_feature_stats, compute_unseen_bank, dataset_batches, save_feature_stats
    from emotion_vit.model import load_emotion_model
    from emotion_vit.transforms import eval_transform

    parser = argparse.ArgumentParser(prog="emotion-vit feature-stats", description=(
        "Write feature_stats.safetensors (class means, pooled covariance and a bank of real features of the "
        "classifier's input from the training split; a second bank from the validation split, faces the model "
        "did not train on) into a model folder, for few-shot adapters. Training writes it; this adds it to "
        "models trained elsewhere."))
    parser.add_argument("--model", required=True, help="Model folder.")
    parser.add_argument("--data", required=True, help="The model's training data (any supported source).")
    add_exclude_labels_flag(parser)
    args = parser.parse_args(argv)
    model = load_emotion_model(args.model)
    splits = load_emotion_dataset(args.data, DataOptions(exclude_labels=args.exclude_labels))
    if splits["train"].features["label"].names != model.labels:
        raise SystemExit(f"data labels {splits['train'].features['label'].names} differ from the model's "
                         f"{model.labels}")
    splits.set_transform(eval_transform(model.preprocessing))
    stats = compute_feature_stats(model.model, dataset_batches(splits["train"]), len(model.labels))
    stats.update(compute_unseen_bank(model.model, dataset_batches(splits["validation"]), len(model.labels)))
    print(save_feature_stats(stats, model.labels, args.model))


def push_command(argv: list[str]) -> None:
    from emotion_vit.hub import push_folder

    parser = argparse.ArgumentParser(prog="emotion-vit push",
                                     description="Upload a model or adapter folder to the hub.")
    parser.add_argument("--model", required=True, help="Model folder (or adapter folder) to upload.")
    parser.add_argument("--repo-id", required=True, help="USER/NAME on the Hugging Face hub.")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    print(push_folder(args.model, args.repo_id, private=args.private))


if __name__ == "__main__":  # python -m emotion_vit.cli
    main()
