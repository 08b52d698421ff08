"""What a teacher sees, callback by callback: the Live tab's answers, the mood timeline and session report,
the Photo tab's table and JSON download, the faces taken from references, labels readable at any size."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from PIL import Image

from emotion_vit.adapt import References
from emotion_vit.annotate import draw_faces, emotion_color
from emotion_vit.mood import MoodTimeline
from emotion_vit.pipeline import FaceEmotion
from emotion_vit.report import write_session_report
from emotion_vit.service import AppSettings, EmotionService
from emotion_vit.webapp.live import FRAME_FAULT, live_step, reset_live, session_report
from emotion_vit.webapp.personalize import add_references, reference_gallery
from emotion_vit.webapp.photo import photo_step

ASTRONAUT = REPO / "tests" / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def service() -> EmotionService:
    return EmotionService(AppSettings())


def test_mood_timeline_bins_shares_and_keeps_the_whole_session():
    mood = MoodTimeline(labels=["happy", "sad"], history_s=3600)
    t0 = 1_700_000_000.0
    for second in range(600):  # ten minutes: 2 faces a second, one happy; sad only in the last minute
        mood.add(["happy", "sad" if second >= 540 else "happy"], timestamp=t0 + second)
    plot = mood.table(window_s=300, points=60)
    assert plot["seconds"].min() == 300 and plot["seconds"].max() <= 599  # the last 5 minutes only
    assert len(plot) == 2 * 60 and plot.groupby("seconds")["share"].sum().round(6).eq(1).all()
    assert pytest.approx(plot[(plot.emotion == "sad")]["share"].iloc[-1]) == 0.5
    assert mood.current(seconds=5) == {"happy": 0.5, "sad": 0.5}
    report = mood.report(bin_s=60)
    assert list(report.columns) == ["time_utc", "seconds", "faces_seen", "happy", "sad"]
    assert len(report) == 10 and report["faces_seen"].tolist() == [120] * 10  # the whole session, not 5 minutes
    assert report["sad"].tolist() == [0.0] * 9 + [0.5] and report["time_utc"][0] == "2023-11-14 22:13:20"
    mood.add([], timestamp=t0 + 700)  # no face: nothing recorded
    assert max(mood.seconds) == 599


def test_session_report_is_a_csv_and_a_plot_with_no_faces(tmp_path):
    mood = MoodTimeline(labels=["happy", "sad", "confused"])
    with pytest.raises(ValueError, match="No faces seen"):
        write_session_report(mood)
    for second in range(30):
        mood.add(["happy", "confused"], timestamp=1000.0 + second)
    csv_path, png_path = write_session_report(mood)
    table = pd.read_csv(csv_path)
    assert table[["happy", "sad", "confused"]].iloc[0].tolist() == [0.5, 0.0, 0.5]
    plot = Image.open(png_path)
    assert plot.format == "PNG" and plot.size[0] >= 800
    pixels = np.asarray(plot.convert("RGB")).reshape(-1, 3)
    assert (np.abs(pixels - np.array(emotion_color("happy"))).sum(1) < 30).any()  # the line in happy's colour


def test_live_step_answers_with_the_largest_face_named_and_the_speed(service):
    frame = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    inputs = ("retinaface", 0.6, 0.6, False, "none", "")
    annotated, largest, rows, plot, now, speed, session = live_step(service, frame, None, *inputs)
    assert annotated.shape == frame.shape and len(rows) == 1 and rows[0][0] == "#1"
    assert largest["label"] == "Largest face (#1)" and set(largest["value"]) == set(service.model.labels)
    assert isinstance(plot, pd.DataFrame) and set(now) == set(service.model.labels)
    assert "frames/s" in speed and "ms per frame" in speed and "1 face(s)" in speed
    again = live_step(service, frame, session, *inputs)
    assert again[-1] is session and again[2][0][0] == "#1"  # the same track
    assert len(session.mood.seconds) >= 1
    report = session_report(session)
    assert report["visible"] and [path.rsplit("/", 1)[-1] for path in report["value"]] == ["mood.csv", "mood.png"]
    for bad_frame, detector in ((np.zeros((5, 5, 7), np.uint8), "retinaface"), (frame, "haar")):
        skipped = live_step(service, bad_frame, session, detector, *inputs[1:])  # a bad frame or setting
        assert skipped[-1] is session and skipped[0] is not None  # the stream goes on, the picture unchanged
    def fault(*args, **kwargs):
        raise RuntimeError("/srv/secret/model.bin: kernel failed")
    service.analyze, real_analyze = fault, service.analyze  # a server fault, not the visitor's input
    try:
        live_step(service, frame, session, *inputs)
    finally:
        service.analyze = real_analyze
    assert session.last_error == FRAME_FAULT  # said without the fault's text
    cleared = reset_live(service, "none", "")
    assert cleared[1]["label"] == "Largest face" and not cleared[-1].mood.seconds


def test_photo_step_gives_a_table_a_summary_and_the_json(service, tmp_path):
    outputs = photo_step(service, str(ASTRONAUT), "retinaface", 0.6, False, "none", "")
    annotated, rows, note, download = outputs
    assert annotated.shape[:2] == (512, 512) and rows[0][0] == "#1" and rows[0][1] in service.model.labels
    assert "1 face(s) found" in note and "emotion-vit-fer2013" in note
    answer = json.loads(open(download["value"]).read())
    assert answer["faces"][0]["label"] == rows[0][1] and answer["adapter"] == "none" and download["visible"]
    assert photo_step(service, None, "retinaface", 0.6, False, "none", "") == (
        None, [], "", {"__type__": "update", "value": None, "visible": False})  # no stale answer


def test_the_face_taken_from_each_reference_is_shown_with_its_source(service):
    refs, summary, gallery = add_references(service, [str(ASTRONAUT)], None, "happy", None)
    assert "**happy** 1" in summary and len(gallery) == 1
    crop, caption = gallery[0]
    assert caption == "happy: astronaut.jpg" and crop.shape[0] < 400  # the face, not the whole photo
    assert reference_gallery(References()) == []


def test_references_follow_the_visitors_alignment_and_detector(service, tmp_path):
    """The Personalize tab cuts a reference as the visitor's live view cuts faces (Settings), not as the server's
    defaults do; a detector the app does not have is refused in words."""
    tilted = tmp_path / "tilted.png"
    Image.open(ASTRONAUT).convert("RGB").rotate(20, resample=Image.BILINEAR).save(tilted)
    crops = {align: add_references(service, [str(tilted)], None, "happy", None, "retinaface", align)[2][0][0]
             for align in (False, True)}
    assert not np.array_equal(crops[False], crops[True])
    default = add_references(service, [str(tilted)], None, "happy", None)[2][0][0]
    np.testing.assert_array_equal(default, crops[service.settings.align])
    with pytest.raises(gr.Error, match="Unknown detector; choose one of retinaface, yunet"):
        add_references(service, [str(tilted)], None, "happy", None, "../../etc/passwd", True)
    with pytest.raises(gr.Error, match="align must be true or false"):  # a raw client's text is not a boolean
        add_references(service, [str(tilted)], None, "happy", None, "retinaface", "false")


def test_a_detector_the_server_cannot_load_is_refused_in_words(tmp_path, monkeypatch):
    """YuNet without its model file (and no internet): the Photo and Personalize tabs say so in a sentence,
    with no path or URL, and later requests do not try to load it again."""
    from emotion_vit import service as service_module
    loads = []
    real_create = service_module.create_detector
    monkeypatch.setattr(service_module, "create_detector",
                        lambda name, **kwargs: loads.append(name) or real_create(name, **kwargs))
    missing = tmp_path / "secret-folder" / "yunet.onnx"
    service = EmotionService(AppSettings(yunet_model=str(missing)))
    for _ in range(2):
        with pytest.raises(gr.Error) as refused:
            photo_step(service, str(ASTRONAUT), "yunet", 0.6, False, "none", "")
        assert "yunet face detector is not available on this server" in str(refused.value)
        assert "secret-folder" not in str(refused.value)
    with pytest.raises(gr.Error, match="not available on this server"):
        add_references(service, [str(ASTRONAUT)], None, "happy", None, "yunet", False)
    assert photo_step(service, str(ASTRONAUT), "retinaface", 0.6, False, "none", "")[1]  # the other still serves
    assert loads.count("yunet") == 1


def test_labels_are_readable_on_small_faces_in_large_photos():
    photo = np.zeros((3000, 4000, 3), np.uint8)
    face = FaceEmotion(box=(100.0, 300.0, 140.0, 340.0), score=0.9, label="happy",
                       probabilities={"happy": 0.9, "sad": 0.1}, track_id=None, landmarks=None)
    drawn = draw_faces(photo, [face], max_side=None)
    label_rows = np.flatnonzero((np.abs(drawn[:, 100:110].astype(int) - emotion_color("happy")).sum(-1) < 5).any(1))
    label_height = label_rows.max() - label_rows.min()
    assert label_height >= 0.015 * 4000  # shrunk to a 1000 px wide page, still >= 15 px tall


def test_downloads_are_deleted_after_their_time(monkeypatch):
    from emotion_vit import report
    monkeypatch.setattr(report, "KEEP_S", 0.2)
    folder = report.write_answer_json({"faces": []}).parent
    assert folder.is_dir()
    time.sleep(0.3)
    report.purge_old_reports()  # what one background thread does every PURGE_EVERY_S, and each new download
    assert not folder.exists()
    purgers = [thread for thread in threading.enumerate() if thread.name == "purge-reports"]
    assert len(purgers) == 1 and purgers[0].daemon  # one thread, however many downloads


def test_references_are_counted_before_decoding_and_kept_small(service, tmp_path, monkeypatch):
    """A visitor's references cost the shared server little: a call naming more photos than the session has
    room for is refused before any is decoded, a large photo's face is kept at most REFERENCE_MAX_SIDE, and
    notes of broken uploads are bounded."""
    from emotion_vit.webapp import personalize
    large = tmp_path / "large.png"
    Image.open(ASTRONAUT).convert("RGB").resize((2048, 2048)).save(large)
    refs, _, gallery = add_references(service, [str(large)], None, "happy", None)
    assert max(refs.crops[0].shape[:2]) <= personalize.REFERENCE_MAX_SIDE and gallery[0][1] == "happy: large.png"
    decoded = []
    monkeypatch.setattr(personalize, "read_image", lambda path: decoded.append(path) or np.zeros((9, 9, 3), np.uint8))
    room = service.settings.max_references - len(refs.crops)
    with pytest.raises(gr.Error, match="At most 100 reference faces"):
        add_references(service, [str(large)] * (room + 1), None, "happy", refs)
    assert not decoded and len(refs.crops) == 1  # refused before decoding anything, the session unchanged
    monkeypatch.undo()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    for _ in range(3):
        refs = add_references(service, [str(broken)] * 30, None, "happy", refs)[0]
    assert len(refs.crops) == 1 and len(refs.skipped) == personalize.MAX_SKIPPED_NOTED


def test_a_crowd_is_classified_up_to_max_faces_in_batches(service, monkeypatch):
    """A mosaic of faces asks for no more than `max_faces` classifications, and batching them changes nothing."""
    from emotion_vit import pipeline as pipeline_module
    from emotion_vit.pipeline import EmotionPipeline, PipelineOptions
    face = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((256, 256)))
    mosaic = np.tile(face, (2, 3, 1))  # six astronauts
    whole = EmotionPipeline(service.model, service.detector("retinaface")).analyze(mosaic)
    assert len(whole.faces) == 6 and whole.faces_not_classified == 0
    monkeypatch.setattr(pipeline_module, "CLASSIFY_BATCH", 4)
    batches, predict = [], service.model.predict_proba
    monkeypatch.setattr(service.model, "predict_proba", lambda crops: batches.append(len(crops)) or predict(crops))
    detector = service.detector("retinaface")
    capped = EmotionPipeline(service.model, detector, PipelineOptions(max_faces=5)).analyze(mosaic)
    assert len(capped.faces) == 5 and capped.faces_not_classified == 1
    assert batches == [4, 1]  # five crops (one per face on this path) in batches of at most CLASSIFY_BATCH
    for a, b in zip(whole.faces, capped.faces):
        assert a.box == b.box and abs(a.probabilities["happy"] - b.probabilities["happy"]) < 0.02  # bf16 differs a hair
    monkeypatch.setattr(service.settings, "max_faces", 2)  # the server's setting reaches the photo path
    photo = service.analyze(mosaic)
    assert len(photo.faces) == 2 and photo.faces_not_classified == 4


def test_only_the_accepted_image_formats_are_decoded(monkeypatch):
    """EPS (Ghostscript) and the like are not images here, and a malformed EXIF block leaves the image as it is."""
    import io
    import struct

    from PIL import ImageOps

    from emotion_vit import images
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(ValueError, match="not an image file"):
        images.read_image(eps)

    def broken_exif(image):
        raise struct.error("unpack requires a buffer of 4 bytes")
    monkeypatch.setattr(ImageOps, "exif_transpose", broken_exif)
    buffer = io.BytesIO()
    Image.open(ASTRONAUT).save(buffer, "PNG")
    assert images.read_image(buffer.getvalue()).shape == (512, 512, 3)


def test_a_malformed_exif_block_is_a_clean_refusal_or_ignored():
    """An eXIf chunk that is not TIFF data: Gradio's own decoder (the webcam capture) raises on it, which
    becomes one short refusal; the Photo tab takes the file undecoded and read_image ignores the block."""
    import io
    import os
    import struct
    import zlib

    from gradio.utils import get_upload_folder

    from emotion_vit.images import read_image
    from emotion_vit.webapp.uploads import UploadedImage
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(buffer, "PNG")
    data, exif = buffer.getvalue(), b"XX"
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    at = data.index(b"IDAT") - 4
    folder = Path(get_upload_folder()) / "test-exif"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exif.png"
    path.write_bytes(data[:at] + chunk + data[at:])
    payload = {"path": str(path), "orig_name": "exif.png", "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(gr.Error, match="Corrupt image, or a format that cannot be read"):
        UploadedImage(type="numpy").preprocess(payload)
    assert UploadedImage(type="filepath", image_mode=None).preprocess(payload) == os.path.realpath(path)
    assert read_image(path).shape == (8, 8, 3)


def test_an_adapter_for_another_model_is_refused_without_server_paths(tmp_path):
    """An operator's adapter made for another base model: the visitor reads one sentence, the log the details."""
    import torch
    from safetensors.torch import save_file

    from emotion_vit.adapt.store import GATE_FILE, METADATA_FILE
    folder = tmp_path / "adapters" / "old-room"
    folder.mkdir(parents=True)
    save_file({"prototypes": torch.zeros(1, 4)}, str(folder / GATE_FILE))
    (folder / METADATA_FILE).write_text(json.dumps({
        "name": "old-room", "labels": ["happy"], "method": "prototype", "base_model": str(tmp_path / "secret-model"),
        "base_model_sha256": "0" * 64}))
    service = EmotionService(AppSettings(adapters_dir=str(tmp_path / "adapters")))
    with pytest.raises(ValueError) as refused:
        service.model_for("old-room")
    assert str(refused.value) == ("adapter 'old-room' cannot be used with this server's model: "
                                  "rebuild it from its references")


def test_health_runs_the_model_at_most_once_a_period(monkeypatch):
    from emotion_vit import service as service_module
    service = EmotionService(AppSettings())
    calls, predict = [], service.model.predict_proba
    monkeypatch.setattr(service.model, "predict_proba", lambda faces: calls.append(1) or predict(faces))
    answers = [service.health() for _ in range(20)]
    assert all(answer["status"] == "ok" for answer in answers) and len(calls) == 1  # a flood: one forward pass
    monkeypatch.setattr(service_module, "HEALTH_CHECK_EVERY_S", 0.0)
    assert service.health()["status"] == "ok" and len(calls) == 2  # the period over: checked again


def test_a_build_reads_a_copy_of_the_sessions_references(service, monkeypatch):
    """Adding references runs beside a build (their own concurrency groups): the build must not see the
    session's lists change under it."""
    from emotion_vit.webapp.personalize import build
    refs = add_references(service, [str(ASTRONAUT)], None, "happy", None)[0]
    seen = []

    def stopped_build(passed, name, key, progress=None, client=None):
        seen.append(passed)
        raise ValueError("stopped by the test")
    monkeypatch.setattr(service, "build_adapter", stopped_build)
    with pytest.raises(gr.Error, match="stopped by the test"):
        build(service, "room-12", refs, "k" * 16)
    assert seen[0] is not refs and seen[0].crops is not refs.crops and seen[0].labels == refs.labels
