"""Run the emotion_vit app: live webcam view, photo analysis and the /analyze API.

    python app.py                       # the embedded model, on http://127.0.0.1:7860
    python app.py --model user/name     # a hub model, or --model path/to/folder
"""

import argparse
import logging
import os

from emotion_vit.detect import DETECTOR_BACKENDS
from emotion_vit.pipeline import set_inference_threads
from emotion_vit.service import MODEL_ENV, AppSettings, EmotionService, default_model
from emotion_vit.webapp import MAX_FILE_MB, QUEUE_SIZE, build_app, launch


def parse_args() -> argparse.Namespace:
    defaults = AppSettings()
    parser = argparse.ArgumentParser(description="Live face-emotion recognition (Gradio app and API).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="Address to listen on (default 127.0.0.1; 0.0.0.0 in containers; env GRADIO_SERVER_NAME).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="Port (default 7860; env GRADIO_SERVER_PORT).")
    parser.add_argument("--share", action="store_true", help="Also open a temporary public gradio.live link.")
    parser.add_argument("--model", default=default_model(),
                        help=f"Model folder or hub id (env {MODEL_ENV}; default: the embedded FER2013 model).")
    parser.add_argument("--detector", choices=DETECTOR_BACKENDS, default=defaults.detector, help="Face detector.")
    parser.add_argument("--yunet-model", help="Local YuNet ONNX file (else downloaded once, sha256-checked).")
    parser.add_argument("--score-threshold", type=float, default=defaults.score_threshold,
                        help="Minimum detector confidence for a face.")
    parser.add_argument("--min-face-size", type=int, default=defaults.min_face_size, help="Smallest face side, pixels.")
    parser.add_argument("--max-side", type=int, default=defaults.max_side,
                        help="Live frames are detected at most this large (speed); boxes map back.")
    parser.add_argument("--photo-max-side", type=int, default=defaults.photo_max_side,
                        help="Photos and API images are detected at most this large.")
    parser.add_argument("--smoothing", type=float, default=defaults.smoothing,
                        help="Live: weight of past frames in each face's probabilities (0: none).")
    parser.add_argument("--align", action="store_true", help="Rotate face crops so the eyes are level.")
    parser.add_argument(
        "--no-flip-tta",
        dest="flip_tta",
        action="store_false",
        help="Classify each face once, not also mirrored (half the classifier time, ~1.8 points less accurate).",
    )
    parser.add_argument("--stream-every", type=float, default=defaults.stream_every,
                        help="Seconds between webcam frames sent for analysis.")
    parser.add_argument("--stream-time-limit", type=int, help="Seconds a live stream may run (default: no limit).")
    parser.add_argument("--max-file-mb", type=int, default=MAX_FILE_MB, help="Largest upload accepted, in MB.")
    parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE,
                        help="Requests that may wait for the model; more are refused (queue full).")
    parser.add_argument("--threads", type=int, help="Threads for the classifier (default: the CPU cores, up to 4).")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = parse_args()
    set_inference_threads(args.threads)
    settings = AppSettings(
        model=args.model,
        detector=args.detector,
        yunet_model=args.yunet_model,
        score_threshold=args.score_threshold,
        min_face_size=args.min_face_size,
        max_side=args.max_side,
        photo_max_side=args.photo_max_side,
        smoothing=args.smoothing,
        align=args.align,
        flip_tta=args.flip_tta,
        stream_every=args.stream_every,
        stream_time_limit=args.stream_time_limit,
    )
    launch(build_app(EmotionService(settings)), args.host, args.port, share=args.share, max_file_mb=args.max_file_mb,
           queue_size=args.queue_size)


if __name__ == "__main__":
    main()
