"""End to end in a real browser: headless Chromium streams a fake webcam into the running app.

Chromium plays a y4m video (the astronaut's face gliding across the frame, see fake_webcam.py) as
its camera; the app runs as a subprocess exactly like `python app.py --model ... --port N`. The
test opens the Live tab, starts the webcam stream and waits until frames come back from the server
annotated, with the largest face's emotion probabilities and a row in the face table. A second
test uploads the photo on the Photo tab and clicks Analyze.

Skipped, with the reason in pytest's summary, when Chromium (Debian's /usr/bin/chromium) or Playwright
is missing or cannot start, except under CI (CI=true), where .ci/run installs Chromium and its absence
fails; no browser is ever downloaded. Screenshots of both tabs are kept for a human look
($EMOTION_VIT_SCREENSHOTS, default the temp dir: browser_live.png, browser_photo.png), and on a
failure one more goes to the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO
from fake_webcam import ASTRONAUT, write_fake_webcam
from PIL import Image

from emotion_vit.labels import EMOTIONS
from emotion_vit.service import DEFAULT_MODEL, MODEL_ENV

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
SERVER_START_TIMEOUT_S = 90  # model and detector load; the CPU may be shared with a training job
STREAM_TIMEOUT_S = 60
# Gradio 6's webcam stream button: aria-label "capture photo" or "start recording"; its text the app sets.
STREAM_BUTTON = re.compile(r"capture photo|start recording", re.IGNORECASE)
LARGEST_FACE = re.compile(r"^\s*Largest face \(#\d+\)\s*$")  # named by the face's track id
SCREENSHOTS = Path(os.environ.get("EMOTION_VIT_SCREENSHOTS") or tempfile.gettempdir())

IN_CI = bool(os.environ.get("CI"))  # .ci/run installs Chromium: there, a missing or broken browser is a failure
pytestmark = pytest.mark.skipif(CHROMIUM is None and not IN_CI,
                                reason="no Chromium (chromium or /usr/bin/chromium) installed")


# --- fixtures: the model, the app server, the browser ---

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """$EMOTION_VIT_MODEL, else the embedded model if trained, else a small untrained ViT: the test
    checks the browser-server plumbing, not accuracy."""
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    if (DEFAULT_MODEL / "config.json").exists():
        return str(DEFAULT_MODEL)
    from emotion_vit.model import build_image_processor, build_model

    folder = tmp_path_factory.mktemp("model")
    config = {"patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64}  # as tests/test_pipeline.py::small_model
    build_model(model_type="vit", model_config=config).save_pretrained(folder)
    build_image_processor(48).save_pretrained(folder)
    return str(folder)


def model_labels(model: str) -> list[str]:
    config = Path(model) / "config.json"
    if config.exists():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        if id2label:
            return [id2label[key] for key in sorted(id2label, key=int)]
    return list(EMOTIONS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_url(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with code {process.returncode} before serving:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"the app did not answer on {url} within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app_url(model_dir, tmp_path_factory):
    """`python app.py --model MODEL --port N` on 127.0.0.1, stopped (terminate, then kill) afterwards."""
    log = tmp_path_factory.mktemp("app") / "app.log"
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.pop("GRADIO_SERVER_NAME", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--model", model_dir, "--host", "127.0.0.1", "--port", str(port),
             "--threads", "1"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_url(url, process, log, SERVER_START_TIMEOUT_S)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def fake_webcam(tmp_path_factory) -> Path:
    return write_fake_webcam(tmp_path_factory.mktemp("webcam") / "astronaut.y4m")


@pytest.fixture(scope="module")
def browser(fake_webcam):
    """Headless Debian Chromium whose camera is the fake webcam video; skip if it cannot start."""
    if CHROMIUM is None:
        pytest.fail("CI without Chromium: .ci/run installs Debian's chromium; see its log")
    playwright = sync_api.sync_playwright().start()
    try:
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, timeout=60_000,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                      f"--use-file-for-fake-video-capture={fake_webcam}"])
        except sync_api.Error as error:
            (pytest.fail if IN_CI else pytest.skip)(f"playwright cannot launch {CHROMIUM}: {error}")
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextmanager
def screenshot_on_failure(page, path: Path):
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the failure: {path}")
        except sync_api.Error as error:  # the browser may be the thing that broke
            print(f"no screenshot: {error}")
        raise


# --- helpers: Gradio's DOM, found by roles, labels and Gradio's own data-testids ---

def open_tab(page, name: str):
    """Click a top-level tab and return its (visible) panel."""
    page.get_by_role("tab", name=name, exact=True).click()
    panel = page.get_by_role("tabpanel").filter(visible=True)
    sync_api.expect(panel).to_have_count(1)
    return panel


def labelled_block(scope, label: str | re.Pattern, testid: str | None = None):
    """A component block by its visible label ("Faces", or a pattern such as "Largest face (#N)") and,
    where labels repeat, by a data-testid inside it ("image", "label", ...)."""
    page = scope.page  # `has` locators are relative to the outer element: build them from the page
    pattern = label if isinstance(label, re.Pattern) else re.compile(rf"^\s*{re.escape(label)}\s*$")
    block = scope.locator(".block").filter(has=page.get_by_test_id("block-label").filter(has_text=pattern))
    return block.filter(has=page.get_by_test_id(testid)) if testid else block


def label_state(block, labels: list[str]) -> tuple[str | None, dict[str, str]]:
    """A gr.Label's top class and {class: 'NN%'} as shown."""
    top = block.get_by_test_id("label-output-value")
    shown = top.inner_text(timeout=1000).strip() if top.count() else None
    percentages = {}
    for label in labels:
        row = block.get_by_test_id(f"{label}-confidence-set")
        if row.count():
            match = re.search(r"\d+(\.\d+)?\s*%", row.inner_text(timeout=1000))
            if match:
                percentages[label] = match.group(0)
    return shown, percentages


# --- the tests ---

def start_webcam(page, live):
    """Allow the fake camera, then press the stream button, which says Start (not Record: nothing is
    recorded) and then Stop. Returns that button."""
    live.get_by_role("button", name="Click to Access Webcam").click()
    webcam = live.get_by_test_id("image").filter(has=page.get_by_test_id("webcam-video"))
    sync_api.expect(webcam.get_by_test_id("webcam-video")).to_be_visible()
    page.wait_for_function(  # the fake camera really plays: the video has frames
        "v => v.readyState >= 2 && v.videoWidth > 0", arg=webcam.get_by_test_id("webcam-video").element_handle())
    start = webcam.get_by_role("button", name=STREAM_BUTTON)
    sync_api.expect(start).to_have_text(re.compile(r"^\s*Start\s*$"))
    start.click()
    sync_api.expect(start).to_have_text(re.compile(r"^\s*Stop\s*$"))  # streaming now
    return start


def read_largest_face(live, labels: list[str], timeout_s: float = STREAM_TIMEOUT_S):
    """Wait until 'Largest face (#id)' shows a top class and every label's percentage."""
    largest = labelled_block(live, LARGEST_FACE)
    shown, percentages = None, {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            shown, percentages = label_state(largest, labels)
        except sync_api.Error:
            pass
        if shown in labels and set(percentages) == set(labels):
            break
        live.page.wait_for_timeout(250)
    return shown, percentages


@pytest.mark.timeout(180)
def test_live_webcam_stream_is_annotated(browser, app_url, page, model_dir, tmp_path):
    labels = model_labels(model_dir)
    started = time.monotonic()
    page.goto(app_url)
    with screenshot_on_failure(page, tmp_path / "live_failure.png"):
        live = open_tab(page, "Live")  # the first tab, selected already; clicking keeps it so
        start = start_webcam(page, live)
        # Two blocks are labelled "Faces" (the annotated frame and the table): the frame is the one
        # with an <img> served by the app; empty until the first answer.
        faces_image = labelled_block(live, "Faces").locator("img[src*='/gradio_api/file=']")
        table_rows = live.get_by_role("row").filter(has_text=re.compile("|".join(map(re.escape, labels))))
        sources: list[str] = []
        row = ""
        deadline = time.monotonic() + STREAM_TIMEOUT_S
        while time.monotonic() < deadline:
            try:  # the page re-renders while we read it: a vanished element just means "read again"
                src = faces_image.first.get_attribute("src", timeout=1000) if faces_image.count() else None
                if src and src not in sources:
                    sources.append(src)
                row = table_rows.first.inner_text(timeout=1000) if table_rows.count() else ""
            except sync_api.Error:
                pass
            if len(sources) >= 3 and re.search(r"\d+%", row):
                break
            page.wait_for_timeout(250)
        shown, percentages = read_largest_face(live, labels)
        elapsed = time.monotonic() - started
        print(f"live: {len(sources)} distinct annotated frames, largest face {shown!r} {percentages}, "
              f"table row {row!r}, {elapsed:.1f} s from page load")
        # (a) frames went to the server and came back annotated, as new files served by the app
        assert len(sources) >= 3, f"the annotated frame did not keep changing: {sources}"
        assert all("/gradio_api/file=" in src for src in sources), sources
        # (b) the largest face, named by its track id, with percentages for all the model's classes
        assert shown in labels, f"'Largest face (#id)' shows {shown!r}, not one of {labels}"
        assert set(percentages) == set(labels), percentages
        # (c) the face table has a row for the face: track id, emotion, confidence, runner-up, box
        assert re.search(r"#\d+\s+\w+\s+\d+%", row), f"no face row in the table: {row!r}"
        # (d) speed and the class's current mood are shown
        sync_api.expect(live.get_by_text(re.compile(r"\d+\.\d frames/s · \d+ ms per frame"))).to_be_visible()
        sync_api.expect(labelled_block(live, "Class mood now (last 5 s)")).to_contain_text("100%")
        # (e) the mood plot draws its lines in the boxes' colours, named by the filled legends (frames, plot),
        # not by Vega's hollow markers
        sync_api.expect(live.locator("svg .mark-line path").first).to_be_attached(timeout=10_000)
        sync_api.expect(live.locator("svg .role-legend")).to_have_count(0)
        sync_api.expect(live.locator(".emotion-legend")).to_have_count(2)
        page.screenshot(path=str(SCREENSHOTS / "browser_live.png"), full_page=True)
        start.click()  # stop streaming
        sync_api.expect(start).to_have_text(re.compile(r"^\s*Start\s*$"))
        # (f) the session report: the mood as CSV and PNG, to download
        live.get_by_role("button", name="Session report (CSV and PNG)").click()
        report = labelled_block(live, re.compile(r"^\s*Session report"))
        # the first plot imports matplotlib: allow for it
        sync_api.expect(report).to_contain_text(re.compile(r"mood\s*\.csv"), timeout=30_000)
        sync_api.expect(report).to_contain_text(re.compile(r"mood\s*\.png"))


@pytest.mark.timeout(180)
def test_photo_upload_gives_a_table_and_no_stale_result(browser, app_url, page, model_dir, tmp_path):
    labels = model_labels(model_dir)
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (200, 190, 180)).save(blank)
    page.goto(app_url)
    with screenshot_on_failure(page, tmp_path / "photo_failure.png"):
        photo_tab = open_tab(page, "Photo")
        photo = labelled_block(photo_tab, "Photo", "image")
        photo.get_by_test_id("file-upload").set_input_files(str(ASTRONAUT))  # analysed on upload: no button
        sync_api.expect(photo_tab.get_by_text(re.compile(r"1 face\(s\) found in \d+ ms"))).to_be_visible(timeout=60_000)
        sync_api.expect(labelled_block(photo_tab, "Faces").locator("img[src*='/gradio_api/file=']")).to_be_visible()
        face_row = photo_tab.get_by_role("row").filter(has_text=re.compile("|".join(map(re.escape, labels))),
                                                   visible=True)
        sync_api.expect(face_row).to_have_count(1)
        sync_api.expect(face_row).to_contain_text(re.compile(r"#1\s+\w+\s+\d+%"))
        sync_api.expect(photo_tab.get_by_role("button", name="Download JSON")).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "browser_photo.png"), full_page=True)
        # Another photo replaces the answer at once: the old face row does not stay beside it.
        photo.get_by_role("button", name="Remove Image").click()
        sync_api.expect(face_row).to_have_count(0)
        photo.get_by_test_id("file-upload").set_input_files(str(blank))
        sync_api.expect(photo_tab.get_by_text(re.compile("No face found"))).to_be_visible(timeout=60_000)
        sync_api.expect(face_row).to_have_count(0)


@pytest.mark.timeout(240)
def test_an_adapter_built_in_the_browser_shows_its_faces_and_labels_live(browser, app_url, page, model_dir,
                                                                         tmp_path):
    """Personalize: a new label from one photo, the face it took shown; built, selected, and the live
    'Largest face' then lists all eight labels."""
    labels = [*model_labels(model_dir), "confused"]
    page.goto(app_url)
    with screenshot_on_failure(page, tmp_path / "adapter_failure.png"):
        tab = open_tab(page, "Personalize")
        sync_api.expect(tab.get_by_label("Your adapter key")).to_have_value(re.compile(r"^[0-9a-f]{32}$"))
        tab.get_by_role("button", name="Build adapter", exact=True).click()  # nothing to build from yet
        sync_api.expect(page.get_by_text("Add reference faces first.")).to_be_visible()
        tab.get_by_label("Label").fill("confused")
        labelled_block(tab, "Photos").locator("input[type=file]").set_input_files(str(ASTRONAUT))
        tab.get_by_role("button", name="Add references", exact=True).click()
        sync_api.expect(tab.get_by_text(re.compile(r"1 reference face\(s\): confused 1"))).to_be_visible(
            timeout=60_000)
        gallery = labelled_block(tab, "The face taken from each reference")
        sync_api.expect(gallery.locator("img")).to_have_count(1)
        sync_api.expect(gallery).to_contain_text("confused: astronaut.jpg")
        sync_api.expect(tab.get_by_text("Error", exact=True)).to_have_count(0)  # the failed step's badge is gone
        tab.get_by_label("Adapter name").fill("room-7")
        tab.get_by_role("button", name="Build adapter", exact=True).click()
        sync_api.expect(tab.get_by_text(re.compile(r"Adapter room-7 built"))).to_be_visible(timeout=120_000)
        page.screenshot(path=str(SCREENSHOTS / "browser_personalize.png"), full_page=True)

        live = open_tab(page, "Live")
        start_webcam(page, live)
        shown, percentages = read_largest_face(live, labels)
        print(f"adapter live: largest face {shown!r} {percentages}")
        assert set(percentages) == set(labels), f"rows {sorted(percentages)}, expected the adapter's {labels}"
        # the colour legends follow the adapter: its new label has its colour under the frames and the plot
        sync_api.expect(live.locator(".emotion-legend", has_text="confused")).to_have_count(2)


def test_each_browser_keeps_its_own_adapter_key(browser, app_url, page, tmp_path):
    """The Personalize tab holds a random adapter key per browser, kept across reloads; another browser
    (a fresh context: no shared storage) gets another key."""
    def shown_key(target) -> str:
        tab = open_tab(target, "Personalize")
        field = tab.get_by_label("Your adapter key")
        sync_api.expect(field).to_have_value(re.compile(r"^[0-9a-f]{32}$"), timeout=30_000)
        return field.input_value()

    with screenshot_on_failure(page, tmp_path / "key_failure.png"):
        page.goto(app_url)
        first = shown_key(page)
        page.reload()
        assert shown_key(page) == first
        other = browser.new_context().new_page()
        try:
            other.goto(app_url)
            assert shown_key(other) != first
        finally:
            other.context.close()
