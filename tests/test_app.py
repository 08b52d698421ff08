"""The app on 127.0.0.1, called as teams call it: through gradio_client and /analyze."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import REPO, free_port
from gradio_client import Client, handle_file
from PIL import Image

from emotion_vit.labels import EMOTIONS
from emotion_vit.service import DEFAULT_MODEL, AppSettings, EmotionService
from emotion_vit.webapp import build_app, launch

ASTRONAUT = REPO / "tests" / "assets" / "astronaut.jpg"
MODEL = os.environ.get("EMOTION_VIT_MODEL") or str(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def client():
    app = build_app(EmotionService(AppSettings(model=MODEL)))
    port = free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        app.close()


def upload(tmp_path, name: str, image: Image.Image | bytes):
    path = tmp_path / name
    path.write_bytes(image) if isinstance(image, bytes) else image.save(path)
    return handle_file(str(path))


def test_analyze_a_face_photo(client):
    result = client.predict(handle_file(str(ASTRONAUT)), api_name="/analyze")
    assert set(result) == {"faces", "model", "adapter", "detector", "precision", "image", "timings_ms",
                           "faces_not_classified"} and result["faces_not_classified"] == 0
    assert result["precision"] in ("bfloat16", "float32")
    assert result["adapter"] == "none"
    assert len(result["faces"]) == 1 and result["detector"] == "retinaface"
    face = result["faces"][0]
    assert set(face["probabilities"]) == set(EMOTIONS)
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-3
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    x1, y1, x2, y2 = face["box"]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200 and len(face["landmarks"]) == 5
    assert result["image"] == {"width": 512, "height": 512}
    assert {"detect", "classify", "total"} <= set(result["timings_ms"])


def test_threshold_and_detector_parameters(client):
    strict = client.predict(handle_file(str(ASTRONAUT)), score_threshold=0.99, api_name="/analyze")
    assert len(strict["faces"]) == 1 and strict["faces"][0]["score"] >= 0.99  # RetinaFace gives this face 0.9995
    with pytest.raises(Exception, match="Unknown detector; choose one of retinaface, yunet"):
        client.predict(handle_file(str(ASTRONAUT)), detector="haar", api_name="/analyze")


@pytest.mark.parametrize("name, image", [
    ("blank.png", Image.new("RGB", (640, 480), "white")),  # no face
    ("tiny.png", Image.new("RGB", (1, 1))),
    ("gray.png", Image.open(ASTRONAUT).convert("L")),
    ("rgba.png", Image.open(ASTRONAUT).convert("RGBA")),
    ("sixteen.png", Image.fromarray(np.asarray(Image.open(ASTRONAUT).convert("L"), np.uint16) * 257)),
])
def test_odd_images_give_answers_not_crashes(client, tmp_path, name, image):
    result = client.predict(upload(tmp_path, name, image), api_name="/analyze")
    expected = 0 if name in ("blank.png", "tiny.png") else 1
    assert len(result["faces"]) == expected, name


def test_huge_image(client, tmp_path):
    canvas = Image.new("RGB", (6000, 6000), (90, 90, 90))  # 36 Mpx: under the 40 Mpx limit
    canvas.paste(Image.open(ASTRONAUT).resize((1500, 1500)), (3000, 3000))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=70)
    result = client.predict(upload(tmp_path, "huge.jpg", buffer.getvalue()), api_name="/analyze")
    assert result["image"] == {"width": 6000, "height": 6000} and len(result["faces"]) == 1
    x1, y1, x2, y2 = result["faces"][0]["box"]
    assert 3000 < x1 < x2 < 4500 and 3000 < y1 < y2 < 4500  # mapped back to full-size coordinates


@pytest.mark.parametrize("name, content, message", [
    ("notes.jpg", b"this is not an image", "not an image"),
    ("cut.png", ASTRONAUT.read_bytes()[:4000], "corrupt or truncated"),
])
def test_bad_uploads_are_clear_errors_and_the_app_lives_on(client, tmp_path, name, content, message):
    with pytest.raises(Exception, match=message):
        client.predict(upload(tmp_path, name, content), api_name="/analyze")
    assert len(client.predict(handle_file(str(ASTRONAUT)), api_name="/analyze")["faces"]) == 1


def test_app_help_lists_its_options():
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for flag in ("--host", "--port", "--share", "--model", "--detector", "--score-threshold", "--smoothing"):
        assert flag in out.stdout, flag
    assert "127.0.0.1" in out.stdout


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        EmotionService(AppSettings(model=str(tmp_path / "no-such-model")))


def test_the_app_needs_only_requirements_app():
    """The Docker image installs requirements-app.txt: the app must not import training-only packages."""
    blocked = ["datasets", "evaluate", "sklearn", "pytest", "playwright"]
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
        + "import emotion_vit.webapp, emotion_vit.service, emotion_vit.adapt, emotion_vit.pipeline, "
        "emotion_vit.crop\nprint('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_a_build_does_not_hold_up_analysis(tmp_path):
    """An adapter build runs beside the model's other calls: a visitor's minute-long build must not stop
    every live view (a build that held the inference slot made /analyze wait for it)."""
    service = EmotionService(AppSettings(model=MODEL, adapters_dir=str(tmp_path)))
    started, release = threading.Event(), threading.Event()

    def slow_build(refs, name, key, progress=None, client=None):  # a long build; the handler around it is real
        started.set()
        release.wait(60)
        raise ValueError("stopped by the test")
    service.build_adapter = slow_build
    app = build_app(service)
    port = free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict([handle_file(str(ASTRONAUT))], None, "happy", api_name="/add_references")
        build = client.submit("room-12", "k" * 16, api_name="/build_adapter")
        assert started.wait(30)
        answer = client.predict(handle_file(str(ASTRONAUT)), api_name="/analyze")
        assert len(answer["faces"]) == 1 and not build.done()  # answered while the build still runs
    finally:
        release.set()
        app.close()
