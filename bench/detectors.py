"""Benchmark the face-detector backends: faces found and milliseconds per frame, as a Markdown table.

    python bench/detectors.py [--images DIR] [--repeats N] [--threads N] [--upscale X] [--score-threshold T]

For every backend and every image in DIR (default: ../shared/images next to the repository) it
detects once to count faces (compared with the known count where there is one), then times
`detect` on the image as it is and on a 640x480 webcam-sized frame (the astronaut letterboxed).
Timings are wall-clock per call, after one warm-up call, on an otherwise idle machine only if you
made it so: a background job distorts them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from machine import machine_line
from paths import SHARED
from PIL import Image

from emotion_vit.detect import (
    DETECTOR_BACKENDS,
    YUNET_FILENAME,
    DetectorOptions,
    FaceDetector,
    as_rgb_uint8,
    create_detector,
    default_num_threads,
)

EXPECTED_FACES = {"astronaut.png": 1, "solvay1927.png": 29}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
WEBCAM_SIZE = (640, 480)  # width, height


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fit `image` inside a black width x height canvas, keeping its aspect ratio."""
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return canvas


def time_detect(detector: FaceDetector, frame: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median and 95th-percentile milliseconds per `detect` call, after one warm-up call."""
    detector.detect(frame)
    milliseconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector.detect(frame)
        milliseconds.append((time.perf_counter() - start) * 1000)
    return statistics.median(milliseconds), float(np.percentile(milliseconds, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "images", help="folder of test photos")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per frame")
    parser.add_argument("--backends", nargs="+", default=list(DETECTOR_BACKENDS), choices=DETECTOR_BACKENDS)
    parser.add_argument("--yunet-model", type=Path, default=SHARED / "models" / YUNET_FILENAME,
                        help="local YuNet ONNX file; if missing, the detector downloads it into its cache")
    parser.add_argument("--threads", type=int, default=None, help="detector threads (default: library default)")
    parser.add_argument("--score-threshold", type=float, default=DetectorOptions.score_threshold)
    parser.add_argument("--upscale", type=float, default=DetectorOptions.upscale)
    args = parser.parse_args()

    paths = sorted(path for path in args.images.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        sys.exit(f"no images in {args.images}")
    images = {path.name: as_rgb_uint8(Image.open(path)) for path in paths}
    webcam_source = images.get("astronaut.png", next(iter(images.values())))
    webcam_frame = letterbox(webcam_source, *WEBCAM_SIZE)

    options = DetectorOptions(score_threshold=args.score_threshold, upscale=args.upscale)
    threads = args.threads or default_num_threads()
    print(f"Machine: {machine_line(threads)}")
    print(f"Settings: score_threshold={options.score_threshold}, upscale={options.upscale}, "
          f"min_face_size={options.min_face_size}, max_side={options.max_side}, "
          f"nms_threshold={options.nms_threshold}; threads={threads} "
          f"(RetinaFace: ONNX Runtime intra-op; YuNet: OpenCV process-wide); {args.repeats} timed calls per row\n")

    print("| backend | frame | size (WxH) | faces found | expected | median ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for backend in args.backends:
        model_path = args.yunet_model if backend == "yunet" and args.yunet_model.is_file() else None
        detector = create_detector(backend, options=options, model_path=model_path, num_threads=threads)
        frames = {**images, f"astronaut letterboxed {WEBCAM_SIZE[0]}x{WEBCAM_SIZE[1]}": webcam_frame}
        for name, frame in frames.items():
            found = len(detector.detect(frame))
            median_ms, p95_ms = time_detect(detector, frame, args.repeats)
            expected = EXPECTED_FACES.get(name, 1 if name.startswith("astronaut") else "?")
            height, width = frame.shape[:2]
            print(f"| {backend} | {name} | {width}x{height} | {found} | {expected} | {median_ms:.1f} | {p95_ms:.1f} |")


if __name__ == "__main__":
    main()
