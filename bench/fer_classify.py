"""The peer package `fer` on a folder of labelled frames; runs INSIDE the fer venv (bench/fer_env.sh).

    bench/.venv-fer/bin/python bench/fer_classify.py FOLDER [--threads 2] [--variant tflite|keras]

FOLDER holds <label>/<image> files (what bench/frames.py writes). For each image, fer's own end to
end path, `FER(mtcnn=False).detect_emotions(bgr)` (Haar cascade, its crop with offsets, its FER2013
CNN), and the largest face's top emotion, as a user of fer would read it. Never imports emotion_vit.
Prints one JSON object: versions, and {relative path: top emotion or null when no face was found}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported

import cv2  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=["tflite", "keras"], default="tflite")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(args.threads)
    import fer
    from fer.fer import FER

    detector = FER(mtcnn=False, use_tflite=args.variant == "tflite")
    folder = Path(args.folder)
    answers = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        faces = detector.detect_emotions(bgr) if bgr is not None else []
        largest = max(faces, key=lambda face: face["box"][2] * face["box"][3], default=None)
        answers[str(path.relative_to(folder))] = (max(largest["emotions"], key=largest["emotions"].get)
                                                  if largest else None)
    json.dump({"versions": {"fer": fer.__version__, "tensorflow": tf.__version__, "opencv": cv2.__version__,
                            "python": sys.version.split()[0]},
               "variant": args.variant, "answers": answers}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
