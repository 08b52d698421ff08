"""Would a second detection pass at another scale, on frames where none was found, recover missed faces?

    python bench/detection_retry.py [--data ../shared/data/fer2013.zip] [--split validation] [--seed 0]
                                    [--retries NAME ...] [--yunet-model ../shared/models/...onnx]

The PublicTest faces in frames (`emotion_vit.frames`, as bench/frames.py; no JPEG) go through
RetinaFace with the app's options. On each frame where it finds no face, each retry (RetinaFace at
another scale or a lower threshold, or the YuNet backend) is tried: it recovers the face when its largest
box overlaps the pasted square (IoU >= 0.3), or takes a false box. The cost is measured on face-free frames, one per
face: a background made as the frames' own (blurred tiles or a mosaic of another face) that pass 1
leaves empty, and that the retry fills.
"""

from __future__ import annotations

import argparse

import numpy as np
from machine import machine_line
from paths import SHARED, add_data_arguments

from emotion_vit.detect import YUNET_FILENAME, DetectorOptions, create_detector
from emotion_vit.frame_evaluation import split_faces
from emotion_vit.frames import FrameOptions, face_free_frame, placed_faces
from emotion_vit.track import iou

# name -> (backend, its options)
RETRIES = {"upscale 1.5": ("retinaface", DetectorOptions(upscale=1.5)),
           "upscale 1.5, threshold 0.8": ("retinaface", DetectorOptions(upscale=1.5, score_threshold=0.8)),
           "upscale 2, threshold 0.8": ("retinaface", DetectorOptions(upscale=2.0, score_threshold=0.8)),
           "downscale to 480 px": ("retinaface", DetectorOptions(max_side=480)),
           "threshold 0.5": ("retinaface", DetectorOptions(score_threshold=0.5)),
           "threshold 0.4": ("retinaface", DetectorOptions(score_threshold=0.4)),
           "threshold 0.3": ("retinaface", DetectorOptions(score_threshold=0.3)),
           "YuNet": ("yunet", DetectorOptions()),
           "YuNet, threshold 0.8": ("yunet", DetectorOptions(score_threshold=0.8))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retries", nargs="+", choices=list(RETRIES), default=list(RETRIES))
    parser.add_argument("--yunet-model", default=str(SHARED / "models" / YUNET_FILENAME))
    args = parser.parse_args()

    faces, _ = split_faces(args.data, args.split, seed=args.seed)
    options = FrameOptions(seed=args.seed)
    detector = create_detector("retinaface")
    retries = {name: RETRIES[name] for name in args.retries}
    backends = {backend: detector if backend == "retinaface" else create_detector(backend, model_path=args.yunet_model)
                for backend in {backend for backend, _ in retries.values()}}  # each detector loaded once
    first_pass = DetectorOptions()
    rng = np.random.default_rng(args.seed + 1)
    empty_frames = missed = phantoms = 0
    counts = {name: {"recovered": 0, "false box": 0, "face-free frames filled": 0} for name in retries}
    for placed in placed_faces(faces, options):
        background = face_free_frame(faces[int(rng.integers(0, len(faces)))], rng, options)
        if detector.detect(background, first_pass):
            phantoms += 1
        else:
            empty_frames += 1
            for name, (backend, retry) in retries.items():
                counts[name]["face-free frames filled"] += bool(backends[backend].detect(background, retry))
        if detector.detect(placed.frame, first_pass):
            continue
        missed += 1
        for name, (backend, retry) in retries.items():
            found = backends[backend].detect(placed.frame, retry)
            if found:
                counts[name]["recovered" if iou(found[0].box, placed.box) >= 0.3 else "false box"] += 1
    print(machine_line())
    print(f"{len(faces)} frames; pass 1 (the app's options) finds no face in {missed}; of {len(faces)} face-free "
          f"frames it puts a face in {phantoms}, leaves {empty_frames} empty")
    print("| retry on a frame with no face | faces recovered | false box taken | face-free frames filled |")
    print("|---|---|---|---|")
    for name, row in counts.items():
        print(f"| {name} | {row['recovered']} of {missed} | {row['false box']} | "
              f"{row['face-free frames filled']} of {empty_frames} |")


if __name__ == "__main__":
    main()
