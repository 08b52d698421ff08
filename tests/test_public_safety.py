"""The app in front of anonymous visitors: no server file is read, bad input gets one short answer,
image bombs and oversized uploads are refused before they cost memory. Probed as an attacker would,
over HTTP on 127.0.0.1, with the handlers discovered from /config."""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import REPO, free_port
from gradio_client import Client, handle_file
from PIL import Image

from emotion_vit.service import DEFAULT_MODEL, AppSettings, EmotionService
from emotion_vit.webapp import build_app, launch
from emotion_vit.webapp.uploads import NOT_AN_UPLOAD

ASTRONAUT = REPO / "tests" / "assets" / "astronaut.jpg"
SERVER_FILES = [str(ASTRONAUT), "/etc/hostname", "/no/such/file.jpg", "/etc", str(REPO / "app.py"), "../../etc/passwd",
                "app.py"]  # a relative path: Gradio's own refusal quoted it made absolute (the server's folder)


@pytest.fixture(scope="module")
def server():
    app = build_app(EmotionService(AppSettings(model=str(DEFAULT_MODEL))))
    port = free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True, max_file_mb=2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server + "/", verbose=False)


def image_handlers(base: str) -> list[tuple[int, int, dict[int, str]]]:
    """(fn_index, number of inputs, {position: "image" or "file"}) of every event taking an image or a file."""
    config = httpx.get(f"{base}/config").json()
    kinds = {component["id"]: component["type"] for component in config["components"]}
    handlers = []
    for index, dependency in enumerate(config["dependencies"]):
        positions = {i: kinds[target] for i, target in enumerate(dependency["inputs"])
                     if kinds.get(target) in ("image", "file")}
        if positions:
            handlers.append((index, len(dependency["inputs"]), positions))
    return handlers


def call_raw(base: str, fn_index: int, data: list) -> dict:
    """queue/join, then the event's messages until it completes: the completion message."""
    session = uuid.uuid4().hex
    joined = httpx.post(f"{base}/gradio_api/queue/join",
                        json={"data": data, "fn_index": fn_index, "session_hash": session}, timeout=30)
    if joined.status_code != 200:
        return {"http": joined.status_code, "body": joined.text}
    with httpx.stream("GET", f"{base}/gradio_api/queue/data", params={"session_hash": session}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("no completion message")


def refusal_text(answer: dict) -> str:
    """What a client sees of a refusal: the upload gate's HTTP 400 body, or the handler's error message."""
    if "http" in answer:
        assert answer["http"] == 400, answer
        return answer["body"]
    assert answer.get("success") is False, answer
    return json.dumps(answer.get("output", answer))


def test_every_image_handler_refuses_server_paths_with_one_message(server, capfd):
    handlers = image_handlers(server)
    assert len(handlers) >= 3  # live frames, photo, references (+ capture)
    capfd.readouterr()
    for fn_index, size, positions in handlers:
        for form in ("no meta", "meta", "string"):
            messages = set()
            for path in SERVER_FILES:
                value = {"no meta": {"path": path}, "meta": {"path": path, "meta": {"_type": "gradio.FileData"}},
                         "string": path}[form]
                data = [None] * size
                for position, kind in positions.items():
                    data[position] = [value] if kind == "file" else value
                messages.add(refusal_text(call_raw(server, fn_index, data)))
            assert len(messages) == 1, (fn_index, form, messages)  # no existence oracle, no path quoted back
            text = messages.pop()
            assert "Traceback" not in text and "/etc" not in text and str(REPO) not in text, text
            assert NOT_AN_UPLOAD in text, text
    assert "Traceback" not in capfd.readouterr().err  # one log line per refusal, not a trace


def test_file_objects_naming_web_addresses_are_refused_and_never_fetched(server):
    """Gradio itself downloads a FileData whose path is an http(s) address (it refuses private addresses,
    with its own message): the server fetching for a visitor. Here none is requested, and one message."""
    import http.server
    import threading

    hits = []

    class Bait(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(ASTRONAUT.read_bytes())

        def log_message(self, *args):
            pass

    bait = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Bait)
    threading.Thread(target=bait.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{bait.server_port}/face.jpg"
    try:
        for fn_index, size, positions in image_handlers(server):
            for value in ({"path": url, "url": url, "meta": {"_type": "gradio.FileData"}}, {"path": url}):
                data = [None] * size
                for position, kind in positions.items():
                    data[position] = [value] if kind == "file" else value
                assert NOT_AN_UPLOAD in refusal_text(call_raw(server, fn_index, data))
    finally:
        bait.shutdown()
    assert hits == []


def test_the_gate_reads_json_under_any_spelling_of_its_media_type(server):
    """FastAPI parses a body as JSON for Application/JSON, application/x+json or no content type at all:
    the gate checks each of them (a found bypass brought back paths quoted back, fetches and 120 MB bodies)."""
    config = httpx.get(f"{server}/config").json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "analyze")
    body = json.dumps({"data": [{"path": "app.py", "meta": {"_type": "gradio.FileData"}}, None, None, "none", ""],
                       "fn_index": fn_index, "session_hash": uuid.uuid4().hex})
    for content_type in ("Application/JSON", "application/vnd.probe+json", "application/json; charset=utf-8", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = httpx.post(f"{server}/gradio_api/queue/join", content=body, headers=headers, timeout=30)
        assert answer.status_code == 400 and answer.json() == {"detail": NOT_AN_UPLOAD}, (content_type, answer.text)
        big = httpx.post(f"{server}/gradio_api/queue/join", content=b" " * (3 * 2**20 + 10), headers=headers,
                         timeout=60)
        assert big.status_code == 413, (content_type, big.status_code)
    # Found by a second probe: two Content-Type headers (the gate and FastAPI read different ones), a
    # multipart type on a JSON route (skipped the size cap), JSON nested past the parser's depth (a 500).
    two = [("Content-Type", "application/json"), ("Content-Type", "multipart/form-data; boundary=x")]
    answer = httpx.post(f"{server}/gradio_api/queue/join", content=body, headers=two, timeout=30)
    assert answer.status_code == 400 and "Expected an image" not in answer.text, answer.text
    big = httpx.post(f"{server}/gradio_api/queue/join", content=b" " * (3 * 2**20 + 10), timeout=60,
                     headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert big.status_code == 413, big.status_code
    deep = httpx.post(f"{server}/gradio_api/queue/join", content="[" * 100_000 + "]" * 100_000, timeout=30,
                      headers={"Content-Type": "application/json"})
    assert deep.status_code == 400 and deep.json() == {"detail": "Malformed request."}, deep.text
    # Found by a third review: a body the gate passes is parsed again by FastAPI on the event loop, and a
    # large structure parses slowly (39 MB of small numbers: 0.84 s). Within the size cap, only data URLs
    # (webcam frames) may be large.
    numbers = json.dumps({"data": [[1] * 600_000, None, None, "none", ""], "fn_index": fn_index,
                          "session_hash": uuid.uuid4().hex})
    assert len(numbers) < 2 * 2**20  # under the body cap: refused for its shape, not its size
    answer = httpx.post(f"{server}/gradio_api/queue/join", content=numbers, timeout=30,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json() == {"detail": "Request too large."}, answer.text
    frame = {"url": "data:image/png;base64," + "A" * 1_500_000, "meta": {"_type": "gradio.FileData"}}
    answer = httpx.post(f"{server}/gradio_api/queue/join", timeout=30, headers={"Content-Type": "application/json"},
                        content=json.dumps({"data": [frame, None, None, "none", ""], "fn_index": fn_index,
                                            "session_hash": uuid.uuid4().hex}))
    assert answer.status_code == 200, answer.text  # a large webcam frame passes the gate (the app judges it)


def test_calls_by_name_answer_unknown_names_and_missing_inputs_plainly(server):
    """Gradio answers these with HTTP 500, or with its components' reprs (heap addresses) in the message."""
    assert httpx.post(f"{server}/gradio_api/call/no_such_api", json={"data": []}, timeout=30).status_code == 404
    for route in ("call", "run", "api"):
        answer = httpx.post(f"{server}/gradio_api/{route}/analyze", json={"data": []}, timeout=30)
        assert answer.status_code == 400 and answer.json() == {"detail": "Expected 5 input values, got 0."}, answer.text


def test_sliders_sent_nonsense_are_refused_in_one_line(server, capfd):
    """The page's sliders (live and photo events) get a short refusal for a non-number or a value out of
    range; Gradio's own check failed with a TypeError and logged a traceback."""
    config = httpx.get(f"{server}/config").json()
    sliders = {c["id"] for c in config["components"] if c["type"] == "slider"}
    events = [(i, d["inputs"]) for i, d in enumerate(config["dependencies"]) if sliders & set(d["inputs"])]
    assert len(events) >= 2
    capfd.readouterr()
    for fn_index, inputs in events:
        for nonsense in ("abc", [1, 2], {"a": 1}, 7):
            data = [nonsense if target in sliders else None for target in inputs]
            text = refusal_text(call_raw(server, fn_index, data))
            assert "a number from" in text and "TypeError" not in text, (fn_index, nonsense, text)
    assert "Traceback" not in capfd.readouterr().err


def test_the_api_refuses_server_paths_whether_or_not_they_exist(server):
    config = httpx.get(f"{server}/config").json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "analyze")
    for form in (lambda path: path, lambda path: {"path": path},
                 lambda path: {"path": path, "meta": {"_type": "gradio.FileData"}}):
        messages = {refusal_text(call_raw(server, fn_index, [form(path), "retinaface", 0.6, "none", ""]))
                    for path in SERVER_FILES}
        assert len(messages) == 1, messages
        assert NOT_AN_UPLOAD in messages.pop()


def test_threshold_zero_is_honoured_and_nonsense_is_refused(client):
    everything = client.predict(handle_file(str(ASTRONAUT)), score_threshold=0.0, api_name="/analyze")
    assert len(everything["faces"]) >= 1 and min(face["score"] for face in everything["faces"]) < 0.6
    default = client.predict(handle_file(str(ASTRONAUT)), score_threshold=None, api_name="/analyze")  # the server's
    assert default["faces"]
    for bad in ("abc", -0.1, 1.5, [0.5]):
        with pytest.raises(Exception, match="score_threshold must be a number from 0 to 1"):
            client.predict(handle_file(str(ASTRONAUT)), score_threshold=bad, api_name="/analyze")
    with pytest.raises(Exception, match="Unknown detector; choose one of retinaface, yunet"):
        client.predict(handle_file(str(ASTRONAUT)), detector="<script>", api_name="/analyze")
    with pytest.raises(Exception, match="adapter must be"):
        client.predict(handle_file(str(ASTRONAUT)), adapter=3, api_name="/analyze")


def png_bomb(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def jpeg_header_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header is patched to claim width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("name, content", [("bomb.png", png_bomb(15000, 15000)),
                                           ("liar.jpg", jpeg_header_claiming(14000, 14000))])
def test_image_bombs_are_refused_from_the_header(client, tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(Exception, match="image too large"):
        client.predict(handle_file(str(path)), api_name="/analyze")
    assert time.perf_counter() - start < 5
    assert len(client.predict(handle_file(str(ASTRONAUT)), api_name="/analyze")["faces"]) == 1


def test_uploads_over_the_size_limit_are_refused(server, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(ASTRONAUT.read_bytes() + np.random.default_rng(0).bytes(3 * 1024 * 1024))
    with big.open("rb") as handle:
        answer = httpx.post(f"{server}/gradio_api/upload", files={"files": ("big.jpg", handle, "image/jpeg")},
                            timeout=60)
    assert answer.status_code == 413


def test_an_upload_without_a_file_name_is_a_400_not_a_server_error(server, capfd):
    """A "files" part with no file name is a plain form field to Gradio's parser, which then raises a
    TypeError (HTTP 500, a traceback); the gate answers it in one line. A named file still uploads."""
    capfd.readouterr()
    bare = httpx.post(f"{server}/gradio_api/upload", files={"files": ("", ASTRONAUT.read_bytes(), "image/jpeg")},
                      timeout=30)
    field = httpx.post(f"{server}/gradio_api/upload", data={"files": "not a file"}, files={"x": ("a", b"1")},
                       timeout=30)
    for answer in (bare, field):
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"detail": "Malformed upload: send each file with its file name."}
    assert "Traceback" not in capfd.readouterr().err
    with ASTRONAUT.open("rb") as handle:
        named = httpx.post(f"{server}/gradio_api/upload", files={"files": ("face.jpg", handle, "image/jpeg")},
                           timeout=30)
    assert named.status_code == 200 and named.json()[0].endswith("face.jpg"), named.text


def test_inline_webcam_frames_are_checked_too(server):
    """Gradio's webcam sends frames as base64 data URLs: a lying header there is refused the same way."""
    import base64
    live = next(handler for handler in image_handlers(server) if handler[0] == 0)  # the live stream
    fn_index, size, positions = live
    data = [None] * size
    bomb = "data:image/jpeg;base64," + base64.b64encode(jpeg_header_claiming(14000, 14000)).decode()
    for position in positions:
        data[position] = {"url": bomb, "meta": {"_type": "gradio.FileData"}}
    answer = call_raw(server, fn_index, data)
    assert answer.get("success") is False and "image too large" in json.dumps(answer["output"])


def test_the_container_healthcheck_runs_the_model(server):
    """deploy/healthcheck.py (the image's HEALTHCHECK) passes only when /health's forward pass answers."""
    import subprocess
    import sys
    port = server.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, str(REPO / "deploy" / "healthcheck.py")], capture_output=True, text=True,
                          env=dict(os.environ, GRADIO_SERVER_PORT=port), timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "healthy", done.stdout
    answer = httpx.post(f"{server}/gradio_api/call/health", json={"data": []}, timeout=10)
    assert answer.status_code == 200
    dead = subprocess.run([sys.executable, str(REPO / "deploy" / "healthcheck.py")], capture_output=True, text=True,
                          env=dict(os.environ, GRADIO_SERVER_PORT=str(free_port())), timeout=60)
    assert dead.returncode == 1


def fuzz_corpus(folder) -> list[tuple[str, list]]:
    """(name, /analyze arguments) of bad inputs: wrong types and shapes, lying and broken files, nonsense settings."""
    def file(name: str, content: bytes) -> dict:
        path = folder / name
        path.write_bytes(content)
        return path

    astronaut = ASTRONAUT.read_bytes()
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    files = {
        "empty.jpg": b"", "text.png": b"hello", "half-jpeg.jpg": astronaut[: len(astronaut) // 2],
        "jpeg-header-only.jpg": astronaut[:600], "png-as-jpg.jpg": png.getvalue(), "zeros.png": bytes(4096),
        "random.webp": np.random.default_rng(1).bytes(5000), "html.jpg": b"<html><script>alert(1)</script></html>",
        "svg.png": b"<svg xmlns='http://www.w3.org/2000/svg'/>", "pdf.jpg": b"%PDF-1.4\n%%EOF",
        "gif-header.gif": b"GIF89a" + bytes(20), "bmp-liar.bmp": b"BM" + bytes(60),
        "jpeg-claims-14000.jpg": jpeg_header_claiming(14000, 14000), "jpeg-claims-0x0.jpg": jpeg_header_claiming(0, 0),
        "png-bomb.png": png_bomb(15000, 15000), "../escape.jpg": astronaut,
    }
    corpus = []
    for name, content in files.items():
        path = file(Path(name).name, content)
        corpus.append((name, [handle_file(str(path)), "retinaface", 0.6, "none", ""]))
    ok = handle_file(str(ASTRONAUT))
    corpus += [(f"image={value!r}", [value, "retinaface", 0.6, "none", ""]) for value in (
        None, 0, 1.5, True, [], {}, "", "x" * 5000, {"path": None}, {"path": 3}, {"url": "data:image/png;base64,!!!"},
        {"path": "/dev/zero"}, {"path": "/proc/self/environ"}, {"path": "file:///etc/passwd"}, ["/etc/passwd"])]
    corpus += [(f"detector={value!r}", [ok, value, 0.6, "none", ""]) for value in (None, 3, "", "haar", "../yunet")]
    corpus += [(f"threshold={value!r}", [ok, "retinaface", value, "none", ""])
               for value in ("nan", "inf", -1, 2, [], {}, "0.5; rm -rf /")]
    corpus += [(f"adapter={value!r}", [ok, "retinaface", 0.6, value, ""])
               for value in ("../../etc", "_visitors", "x" * 300, None, 7)]
    corpus += [(f"key={value!r}", [ok, "retinaface", 0.6, "none", value]) for value in ("short", 12, None, ["k" * 20])]
    return corpus


def test_a_fuzz_corpus_gets_clean_refusals_and_the_server_stays_healthy(server, client, tmp_path):
    import subprocess
    import sys
    corpus = fuzz_corpus(tmp_path)
    assert len(corpus) >= 40
    port = server.rsplit(":", 1)[1]
    for name, arguments in corpus:
        try:
            answer = client.predict(*arguments, api_name="/analyze")
            assert set(answer) >= {"faces", "model"}, (name, answer)  # answered: a normal answer
            continue
        except Exception as error:  # refused: one short line, no internals
            text = str(error)
        assert "Traceback" not in text and "/etc/passwd" not in text.replace(name, ""), (name, text)
        assert str(REPO) not in text and "object at 0x" not in text and len(text) < 200, (name, text)
    healthy = subprocess.run([sys.executable, str(REPO / "deploy" / "healthcheck.py")], capture_output=True,
                             text=True, env=dict(os.environ, GRADIO_SERVER_PORT=port), timeout=60)
    assert healthy.returncode == 0, healthy.stdout
    assert len(client.predict(handle_file(str(ASTRONAUT)), api_name="/analyze")["faces"]) == 1


def test_an_unknown_endpoint_is_a_404_not_a_server_error(server):
    for fn_index in (999, -5):
        answer = httpx.post(f"{server}/gradio_api/queue/join",
                            json={"data": [], "fn_index": fn_index, "session_hash": uuid.uuid4().hex}, timeout=10)
        assert answer.status_code == 404 and answer.json() == {"detail": "Unknown endpoint."}, answer.text
    assert httpx.get(f"{server}/config", timeout=10).status_code == 200  # the server lives on


ARENA_PROBE = """
import ctypes, sys, threading
import numpy as np
from PIL import Image
import emotion_vit.webapp
from emotion_vit.cli import app_command

def serve(app, *args, **kwargs):  # in place of the server: eight threads analysing at once, as Gradio's workers
    photo = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
    service = app.fns[0].fn.args[0]  # the live handler's partial holds the app's EmotionService
    threads = [threading.Thread(target=lambda: [service.analyze(photo) for _ in range(3)]) for _ in range(8)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    stream = ctypes.c_void_p(libc.fopen(b"heaps.xml", b"w"))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print("heaps", open("heaps.xml").read().count("<heap nr="))

emotion_vit.webapp.launch = serve
app_command([])  # the app's own start, with its defaults
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_app_keeps_to_two_malloc_heaps(tmp_path):
    """Memory crept up under steady traffic with a glibc heap per thread (bench/load.py's soak): `python app.py`
    caps them at two before it loads the model, unless the operator's MALLOC_ARENA_MAX says otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env["PYTHONPATH"] = str(REPO)

    def heaps(**extra) -> int:
        answer = subprocess.run([sys.executable, "-c", ARENA_PROBE, str(ASTRONAUT)], cwd=tmp_path, env={**env, **extra},
                                capture_output=True, text=True, timeout=300)
        assert answer.returncode == 0, answer.stderr[-2000:]
        return int(answer.stdout.split("heaps")[-1])
    assert heaps() == 2
    assert heaps(MALLOC_ARENA_MAX="8") > 2  # the operator's setting wins (and the probe can count more)
