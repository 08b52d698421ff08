"""Latency per webcam frame: detection, classification and end to end, batched vs one-by-one, vs `fer`.

    python bench/latency.py [--model DIR | --untrained-pvt] [--repeats N] [--with-fer] [--json OUT]

Frames (640x480 RGB, built deterministically from real faces):
  1 face    the astronaut's face region (tests/assets/astronaut.jpg) scaled to a ~180 px face,
            centred on a neutral gray canvas;
  8 faces   the 8 largest faces RetinaFace finds in ../shared/images/solvay1927.png (native size),
            each cropped around the face with a margin and scaled to fill a cell of a 4x2 grid;
  29 faces  all 29 Solvay faces the same way, in a 6x5 grid (one cell left gray).
Without ../shared the 8 and 29 face frames tile copies of the astronaut's face instead (said in the output).

Each frame goes through `EmotionPipeline.analyze` exactly as the app's live view calls it
(`EmotionService.analyze(live=True)`: the app's detector options, a `FaceTracker`, crop geometry), once
per detector backend (RetinaFace; YuNet when its ONNX file is at hand) and per setting:
  max_side 640 (the app's live setting: native for 640x480), batched classification (one forward);
  max_side 640, one-by-one classification (`PipelineOptions(batched=False)`: N forwards);
  each smaller `--max-sides` value (default 480 and 320), batched: faster detection, valid only
  where it still finds every face of the frame (the table says when it does not).
Timings are the pipeline's own `FrameAnalysis.timings_ms` (detect, classify, total), after warm-up
calls, repeats interleaved across the settings of one frame so that load drifts hit all alike.
"Faces found" matches detections to the known face positions (centre of each inside the other).

--with-fer runs the peer package `fer` (Haar cascade + its FER2013 CNN; TensorFlow) on the same
frames in its own venv (bench/fer_env.sh) through bench/fer_worker.py, with the same thread cap,
and adds its rows and a speed-up column (fer's fastest variant on that frame / our end to end).
A busy machine distorts every number: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from machine import machine_info
from paths import REPO, SHARED

from emotion_vit.detect import YUNET_FILENAME, DetectorOptions, FaceDetector, create_detector
from emotion_vit.images import read_image
from emotion_vit.model import EmotionModel, load_emotion_model
from emotion_vit.pipeline import EmotionPipeline, PipelineOptions, set_inference_threads
from emotion_vit.service import DEFAULT_MODEL, AppSettings
from emotion_vit.track import FaceTracker

ASTRONAUT = REPO / "tests" / "assets" / "astronaut.jpg"
ASTRONAUT_FACE = (178.0, 57.0, 272.0, 177.0)  # x1, y1, x2, y2; used only if RetinaFace misses it
SOLVAY = SHARED / "images" / "solvay1927.png"
FRAME_WIDTH, FRAME_HEIGHT = 640, 480
BACKGROUND = 128  # neutral gray
FACE_COUNTS = (1, 8, 29)
GRIDS = {8: (4, 2), 29: (6, 5)}  # columns, rows
SINGLE_FACE_HEIGHT = 180  # px, target face box height in the 1-face frame
CELL_FACE_FRACTION = 1 / 1.5  # face box height / cell height in the grids (the rest is margin)
TARGETS_MS = {1: 30.0, 29: 150.0}  # end-to-end median targets at the app's live setting
DEFAULT_FER_PYTHON = REPO / "bench" / ".venv-fer" / "bin" / "python"
FER_WORKER = REPO / "bench" / "fer_worker.py"

Box = tuple[float, float, float, float]


# ---------------------------------------------------------------------------------------------- frames

@dataclass
class Frame:
    name: str
    image: np.ndarray  # 480x640x3 uint8 RGB, C-contiguous
    faces: list[Box]  # where the faces were placed (canvas pixels): the ground truth for "faces found"
    source: str


def crop_scaled(image: np.ndarray, center: tuple[float, float], crop_size: tuple[float, float],
                out_size: tuple[int, int]) -> tuple[np.ndarray, float, float, float]:
    """A crop_size (w, h) window around `center`, resized to out_size (w, h) in one affine warp (border
    replicated). Returns the patch and the mapping source -> patch: x' = (x - x0) * scale_x, ..."""
    (cx, cy), (cw, ch), (ow, oh) = center, crop_size, out_size
    scale_x, scale_y = ow / cw, oh / ch
    x0, y0 = cx - cw / 2, cy - ch / 2
    matrix = np.array([[scale_x, 0, -x0 * scale_x], [0, scale_y, -y0 * scale_y]], dtype=np.float64)
    interpolation = cv2.INTER_AREA if scale_x < 1 else cv2.INTER_CUBIC
    patch = cv2.warpAffine(image, matrix, (ow, oh), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return patch, x0, y0, scale_x


def canvas() -> np.ndarray:
    return np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), BACKGROUND, np.uint8)


def single_face_frame(source: np.ndarray, box: Box) -> Frame:
    """The face scaled to SINGLE_FACE_HEIGHT, with half a face of context around it, centred on gray."""
    x1, y1, x2, y2 = box
    scale = SINGLE_FACE_HEIGHT / (y2 - y1)
    # Context: half the face size on each side, but never beyond the photo (no replicated smear).
    left, top = max(0.0, x1 - 0.5 * (x2 - x1)), max(0.0, y1 - 0.5 * (y2 - y1))
    right, bottom = min(source.shape[1], x2 + 0.5 * (x2 - x1)), min(source.shape[0], y2 + 0.5 * (y2 - y1))
    width, height = round((right - left) * scale), round((bottom - top) * scale)
    patch, _, _, _ = crop_scaled(source, ((left + right) / 2, (top + bottom) / 2), (right - left, bottom - top),
                                 (width, height))
    image = canvas()
    ox, oy = (FRAME_WIDTH - width) // 2, (FRAME_HEIGHT - height) // 2
    image[oy:oy + height, ox:ox + width] = patch
    face = (ox + (x1 - left) * scale, oy + (y1 - top) * scale, ox + (x2 - left) * scale, oy + (y2 - top) * scale)
    return Frame("1 face", image, [face], "astronaut")


def grid_frame(count: int, source: np.ndarray, boxes: list[Box], source_name: str) -> Frame:
    """`count` faces (boxes cycled if fewer), each filling a cell of the grid, face centred in its cell."""
    columns, rows = GRIDS[count]
    cell_w, cell_h = FRAME_WIDTH // columns, FRAME_HEIGHT // rows
    image, faces = canvas(), []
    for index in range(count):
        x1, y1, x2, y2 = boxes[index % len(boxes)]
        # Window of the cell's aspect ratio around the face; the face takes CELL_FACE_FRACTION of its height.
        window_h = (y2 - y1) / CELL_FACE_FRACTION
        window_w = window_h * cell_w / cell_h
        center = ((x1 + x2) / 2, (y1 + y2) / 2)
        patch, x0, y0, scale = crop_scaled(source, center, (window_w, window_h), (cell_w, cell_h))
        row, column = divmod(index, columns)
        ox, oy = (
            column * cell_w + (FRAME_WIDTH - columns * cell_w) // 2,
            row * cell_h + (FRAME_HEIGHT - rows * cell_h) // 2,
        )
        image[oy:oy + cell_h, ox:ox + cell_w] = patch
        faces.append((ox + (x1 - x0) * scale, oy + (y1 - y0) * scale, ox + (x2 - x0) * scale, oy + (y2 - y0) * scale))
    return Frame(f"{count} faces", image, faces, source_name)


def build_frames(detector: FaceDetector) -> tuple[list[Frame], list[str]]:
    """The 1, 8 and 29 face frames, and notes on how they were made."""
    notes = []
    astronaut = read_image(ASTRONAUT)
    found = detector.detect(astronaut)
    astronaut_box = found[0].box if found else ASTRONAUT_FACE
    frames = [single_face_frame(astronaut, astronaut_box)]
    if SOLVAY.is_file():
        solvay = read_image(SOLVAY)
        boxes = [face.box for face in detector.detect(solvay, DetectorOptions())]  # native size, largest first
        if len(boxes) != 29:
            notes.append(f"RetinaFace found {len(boxes)} faces in {SOLVAY.name}, not 29: grids use those, cycled")
        frames += [grid_frame(count, solvay, boxes[:count], f"{SOLVAY.name} ({min(count, len(boxes))} "
                              f"{'largest ' if count < len(boxes) else ''}faces)") for count in FACE_COUNTS[1:]]
    else:
        notes.append(f"{SOLVAY} not found: the 8 and 29 face frames tile copies of the astronaut's face")
        frames += [grid_frame(count, astronaut, [astronaut_box], "astronaut copies") for count in FACE_COUNTS[1:]]
    for frame in frames:
        frame.image.setflags(write=False)
    return frames, notes


def match_faces(expected: list[Box], found: list[Box]) -> tuple[int, int]:
    """(matched, extra): a detection matches a placed face when each box's centre lies in the other."""
    def centre(box: Box) -> tuple[float, float]:
        return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2

    def inside(point: tuple[float, float], box: Box) -> bool:
        return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]

    unused = list(found)
    matched = 0
    for box in expected:
        candidates = [other for other in unused if inside(centre(other), box) and inside(centre(box), other)]
        if candidates:
            cx, cy = centre(box)
            best = min(candidates, key=lambda other: (centre(other)[0] - cx) ** 2 + (centre(other)[1] - cy) ** 2)
            unused.remove(best)
            matched += 1
    return matched, len(unused)


# ---------------------------------------------------------------------------------------------- timing

@dataclass
class Row:
    frame: str
    method: str  # "retinaface", "yunet", "fer (tflite)", ...
    setting: str  # "max_side 640, batched", ...
    expected: int
    matched: int
    extra: int
    detect_ms: list[float] = field(default_factory=list)
    classify_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    ours: bool = True
    app_setting: bool = False  # the app's live setting (max_side 640, batched)

    @property
    def all_found(self) -> bool:
        return self.matched == self.expected


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), float(np.percentile(values, 95))


def repeats_for(faces: int, repeats: int | None) -> int:
    """Default 50 / 30 / 20 timed frames for 1 / 8 / 29 faces; --repeats N scales them (N for one face)."""
    base = 50 if repeats is None else repeats
    return base if faces == 1 else max(5, round(base * (0.6 if faces <= 8 else 0.4)))


def app_settings() -> tuple[dict, str]:
    """Detector and pipeline settings of the app's live view: the service's own `AppSettings`."""
    settings = AppSettings()
    values = {"score_threshold": settings.score_threshold, "min_face_size": settings.min_face_size,
              "max_side": settings.max_side, "geometry": settings.geometry, "align": settings.align,
              "smoothing": settings.smoothing, "flip_tta": settings.flip_tta}
    return values, "emotion_vit.service.AppSettings"


def time_ours(model: EmotionModel, backend: str, detector_factory, frames: list[Frame], max_sides: list[int],
              settings: dict, repeats: int | None, warmup: int) -> list[Row]:
    """Rows for one detector backend: every frame at every setting, interleaved per frame."""
    live_side = settings["max_side"]
    detectors = {side: detector_factory() for side in max_sides}  # one per input size: no re-shaping per call
    rows = []
    for frame in frames:
        configs = []  # (row, pipeline, detector options, tracker)
        for side in max_sides:
            for batched in ([True, False] if side == live_side else [True]):
                pipeline = EmotionPipeline(model, detectors[side], PipelineOptions(
                    geometry=settings["geometry"], align=settings["align"], batched=batched))
                options = DetectorOptions(score_threshold=settings["score_threshold"],
                                          min_face_size=settings["min_face_size"], max_side=side)
                tracker = FaceTracker(smoothing=settings["smoothing"])  # the live view tracks faces
                analysis = pipeline.analyze(frame.image, tracker=tracker, detector_options=options)
                matched, extra = match_faces(frame.faces, [face.box for face in analysis.faces])
                setting = f"max_side {side}, {'batched' if batched else 'one-by-one'}"
                row = Row(frame.name, backend, setting, len(frame.faces), matched, extra,
                          app_setting=(side == live_side and batched))
                configs.append((row, pipeline, options, tracker))
        for _row, pipeline, options, tracker in configs:
            for _ in range(warmup):
                pipeline.analyze(frame.image, tracker=tracker, detector_options=options)
        for _ in range(repeats_for(len(frame.faces), repeats)):
            for row, pipeline, options, tracker in configs:
                timings = pipeline.analyze(frame.image, tracker=tracker, detector_options=options).timings_ms
                row.detect_ms.append(timings["detect"])
                row.classify_ms.append(timings["classify"])
                row.total_ms.append(timings["total"])
        rows += [config[0] for config in configs]
        print(f"  {backend}: {frame.name} done", file=sys.stderr, flush=True)
    return rows


def time_fer(fer_python: Path, frames: list[Frame], repeats: int | None, warmup: int,
             threads: int) -> tuple[list[Row], dict | None, str | None]:
    """fer's rows from bench/fer_worker.py in the fer venv; (rows, worker info, why skipped)."""
    if not fer_python.is_file():
        return [], None, (f"fer venv python not found at {fer_python}; create the venv with "
                          f"`bash bench/fer_env.sh` (or pass --fer-python), then rerun with --with-fer")
    with tempfile.TemporaryDirectory(prefix="latency-frames-") as folder:
        path = Path(folder) / "frames.npz"
        keys = {f"frame{index}": frame for index, frame in enumerate(frames)}
        np.savez(path, **{key: frame.image for key, frame in keys.items()})
        command = [str(fer_python), str(FER_WORKER), str(path), "--threads", str(threads), "--warmup", str(warmup),
                   "--repeats", *[f"{key}={repeats_for(len(frame.faces), repeats)}" for key, frame in keys.items()]]
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=environment)
        except subprocess.TimeoutExpired:
            return [], None, f"fer worker timed out: {shlex.join(command)}"
    if done.returncode != 0:
        return [], None, f"fer worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return [], None, f"fer worker printed no JSON:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    rows = []
    for key, frame in keys.items():
        for variant, per_frame in report["results"].items():
            result = per_frame[key]
            matched, extra = match_faces(frame.faces, [tuple(box) for box in result["boxes"]])
            setting = {"tflite": "default: Haar + TFLite, per face", "keras": "Haar + Keras .hdf5, batched"}[variant]
            rows.append(Row(frame.name, f"fer ({variant})", setting, len(frame.faces), matched, extra,
                            result["detect_ms"], result["classify_ms"], result["total_ms"], ours=False))
    return rows, {"versions": report["versions"], "settings": report["settings"]}, None


# ---------------------------------------------------------------------------------------------- report

def describe_model(model: EmotionModel, untrained: bool) -> str:
    config = model.model.config
    parameters = sum(p.numel() for p in model.model.parameters())
    note = " UNTRAINED (timing only)" if untrained else ""
    return (f"{model.name}: {config.model_type}, {parameters / 1e6:.2f}M parameters, "
            f"{model.preprocessing.size} px input{note}")


def table(rows: list[Row], fer_best: dict[str, float]) -> list[str]:
    lines = ["| faces | method | setting | faces found | detect ms median / p95 | classify ms median / p95 "
             "| end to end ms median / p95 | speed-up vs fer |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        found = f"{row.matched}/{row.expected}" + (f" +{row.extra} extra" if row.extra else "")
        if not row.all_found:
            found += " MISSES FACES"
        cells = [f"{stats(values)[0]:.1f} / {stats(values)[1]:.1f}" for values in
                 (row.detect_ms, row.classify_ms, row.total_ms)]
        speedup = ""
        if row.ours and row.frame in fer_best:
            speedup = f"{fer_best[row.frame] / stats(row.total_ms)[0]:.1f}x"
        label = f"**{row.setting}**" if row.app_setting else row.setting
        lines.append(f"| {row.frame} | {row.method} | {label} | {found} | {' | '.join(cells)} | {speedup} |")
    return lines


def target_lines(rows: list[Row], fer_best: dict[str, float]) -> list[str]:
    lines = []
    for faces, target in TARGETS_MS.items():
        name = "1 face" if faces == 1 else f"{faces} faces"
        for row in (r for r in rows if r.ours and r.app_setting and r.frame == name):
            median = stats(row.total_ms)[0]
            lines.append(f"- {name}, {row.method}, app setting: {median:.1f} ms end to end (target <= {target:.0f}): "
                         f"{'PASS' if median <= target else 'FAIL'}")
    if fer_best:
        slower = [f"{r.frame} / {r.method} / {r.setting} ({stats(r.total_ms)[0]:.1f} ms vs fer {fer_best[r.frame]:.1f})"
                  for r in rows if r.ours and r.frame in fer_best and stats(r.total_ms)[0] >= fer_best[r.frame]]
        ours = sum(1 for r in rows if r.ours and r.frame in fer_best)
        lines.append("- faster than fer (its fastest variant per frame) on every row: "
                     + ("PASS" if not slower else f"FAIL on {len(slower)} of {ours} rows: " + "; ".join(slower)))
    else:
        lines.append("- faster than fer on every row: not measured (run with --with-fer)")
    return lines


# ---------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_group = parser.add_mutually_exclusive_group()
    model_group.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint folder or hub id "
                             "(default: the embedded models/emotion-vit-fer2013)")
    model_group.add_argument("--untrained-pvt", action="store_true",
                             help="time an untrained PVTv2-b0 at 64 px (the planned architecture) instead")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed frames for the 1-face frame (default 50); 8 and 29 faces get 0.6x and 0.4x")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames per setting first")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch, the detectors and fer (default: set_inference_threads())")
    parser.add_argument("--detectors", nargs="+", default=["retinaface", "yunet"], choices=["retinaface", "yunet"])
    parser.add_argument("--yunet-model", type=Path, default=SHARED / "models" / YUNET_FILENAME,
                        help="local YuNet ONNX (YuNet rows are skipped when it is missing)")
    parser.add_argument("--max-sides", type=int, nargs="+", default=[480, 320],
                        help="downscaled detection settings to try besides the app's live one")
    parser.add_argument("--with-fer", action="store_true", help="also time the peer package fer (own venv)")
    parser.add_argument("--fer-python", type=Path, default=DEFAULT_FER_PYTHON,
                        help="python of the fer venv made by bench/fer_env.sh")
    parser.add_argument("--no-flip-tta", action="store_true",
                        help="classify each face once, as `app.py --no-flip-tta` (default: as the app, face + mirror)")
    parser.add_argument("--json", type=Path, help="write machine, settings and every raw timing here")
    parser.add_argument("--save-frames", type=Path, help="write the test frames as PNG files into this folder")
    args = parser.parse_args()

    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    threads = set_inference_threads(args.threads)
    settings, settings_origin = app_settings()
    if args.no_flip_tta:
        settings["flip_tta"] = False
    with tempfile.TemporaryDirectory(prefix="untrained-pvt-") as scratch:
        if args.untrained_pvt:
            from emotion_vit.model import build_image_processor, build_model
            torch.manual_seed(0)
            build_model(model_type="pvt_v2", image_size=64).save_pretrained(scratch)
            build_image_processor(64).save_pretrained(scratch)
            model_path = scratch
        else:
            model_path = args.model
        try:
            model = load_emotion_model(model_path)
        except FileNotFoundError as error:
            sys.exit(f"{error}\nPass --model DIR (a trained checkpoint, e.g. runs/<name>) or --untrained-pvt "
                     f"for timings of the planned architecture.")
        model_text = describe_model(model, args.untrained_pvt).replace(scratch, "untrained-pvt_v2-b0")
        model.flip_tta = settings["flip_tta"]  # as the app classifies: each face and its mirror, one batch

    def detector_factory(backend: str):
        if backend == "yunet":
            return lambda: create_detector("yunet", model_path=args.yunet_model, num_threads=threads)
        return lambda: create_detector("retinaface", num_threads=threads)

    reference_detector = create_detector("retinaface", num_threads=threads)
    frames, notes = build_frames(reference_detector)
    del reference_detector
    if args.save_frames:
        args.save_frames.mkdir(parents=True, exist_ok=True)
        for frame in frames:
            cv2.imwrite(str(args.save_frames / f"{frame.name.replace(' ', '_')}.png"),
                        cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))

    machine = machine_info(threads)
    max_sides = [settings["max_side"]] + [side for side in args.max_sides if side != settings["max_side"]]
    backends = []
    for backend in args.detectors:
        if backend == "yunet" and not args.yunet_model.is_file():
            notes.append(f"YuNet skipped: {args.yunet_model} not found (pass --yunet-model)")
            continue
        backends.append(backend)

    started = time.perf_counter()
    rows: list[Row] = []
    for backend in backends:
        rows += time_ours(model, backend, detector_factory(backend), frames, max_sides, settings, args.repeats,
                          args.warmup)
    fer_rows, fer_info, fer_skipped = [], None, None
    if args.with_fer:
        print("  fer: running bench/fer_worker.py in its venv", file=sys.stderr, flush=True)
        fer_rows, fer_info, fer_skipped = time_fer(args.fer_python, frames, args.repeats, args.warmup, threads)
        if fer_skipped:
            notes.append(f"fer rows skipped: {fer_skipped}")
    elapsed = time.perf_counter() - started
    load_after = [round(v, 2) for v in os.getloadavg()]

    fer_best = {}
    for row in fer_rows:
        median = stats(row.total_ms)[0]
        fer_best[row.frame] = min(median, fer_best.get(row.frame, float("inf")))
    order = {frame.name: index for index, frame in enumerate(frames)}
    all_rows = sorted(rows + fer_rows, key=lambda row: order[row.frame])  # stable: ours, then fer, per frame

    print(
        f"\nMachine: {machine['cpu']}, {machine['logical_cores']} logical cores ({machine['usable_cores']} usable); "
        f"load average {machine['load_average_1_5_15'][0]} at start, {load_after[0]} at end"
        + (" -- BUSY MACHINE: timings distorted"
           if max(machine["load_average_1_5_15"][0], load_after[0]) > 0.5 else "")
    )
    print(f"Software: Python {machine['python']}, torch {machine['torch']} ({threads} threads), transformers "
          f"{machine['transformers']}, onnxruntime {machine['onnxruntime']}, OpenCV {machine['opencv']}, "
          f"numpy {machine['numpy']}")
    if fer_info:
        versions = fer_info["versions"]
        print(
            f"fer: {versions['fer']} in its own venv: TensorFlow {versions['tensorflow']} (Keras {versions['keras']}), "
            f"OpenCV {versions['opencv']}, numpy {versions['numpy']}; {fer_info['settings']['fer']}; "
            f"TF intra-op / TFLite / OpenCV threads {fer_info['settings']['threads']}, TF inter-op 1"
        )
    print(f"Model: {model_text}")
    print(f"Pipeline: as the app's live view ({settings_origin}): score_threshold {settings['score_threshold']}, "
          f"min_face_size {settings['min_face_size']}, crop {settings['geometry']}, align {settings['align']}, "
          f"flip TTA {settings['flip_tta']}, FaceTracker; detector threads {threads}; app setting in bold")
    print(
        f"Frames: {FRAME_WIDTH}x{FRAME_HEIGHT} RGB; " + "; ".join(f"{frame.name}: {frame.source}" for frame in frames)
    )
    print("Timed frames per setting: " + ", ".join(f"{frame.name} {repeats_for(len(frame.faces), args.repeats)}"
                                                   for frame in frames)
          + f", after {args.warmup} warm-up frames; {elapsed:.0f} s in all")
    for note in notes:
        print(f"Note: {note}")
    print()
    print("\n".join(table(all_rows, fer_best)))
    print("\nTargets:")
    print("\n".join(target_lines(rows, fer_best)))
    invalid = [f"{row.frame} / {row.method} / {row.setting}" for row in rows if not row.all_found or row.extra]
    if invalid:
        print("Settings that miss faces (or add false ones) on a frame are not valid there: " + "; ".join(invalid))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {**machine, "load_average_at_end": load_after}, "model": model_text,
            "settings": {**settings, "geometry": vars(settings["geometry"])},
            "settings_origin": settings_origin, "notes": notes, "fer": fer_info, "elapsed_s": round(elapsed, 1),
            "frames": [{"name": frame.name, "source": frame.source, "faces": [list(box) for box in frame.faces]}
                       for frame in frames],
            "rows": [{"frame": row.frame, "method": row.method, "setting": row.setting, "expected": row.expected,
                      "matched": row.matched, "extra": row.extra, "app_setting": row.app_setting, "ours": row.ours,
                      **{key: {"median": stats(values)[0], "p95": stats(values)[1], "raw": values}
                         for key, values in (("detect_ms", row.detect_ms), ("classify_ms", row.classify_ms),
                                             ("total_ms", row.total_ms))}}
                     for row in all_rows]}, indent=1))
        print(f"\nRaw numbers: {args.json}")


if __name__ == "__main__":
    main()
