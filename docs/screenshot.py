"""The README's picture: the Live tab in headless Chromium, its fake webcam showing a group photo.

    python docs/screenshot.py --photo ../shared/images/solvay1927.png   # writes docs/images/app-live.jpg

Starts `python app.py` on 127.0.0.1, plays the photo as Chromium's camera (a still y4m video), presses
Start, waits for the mood plot to fill, and saves the top of the page. Needs Debian's chromium and the
playwright package (requirements.txt); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]


def write_y4m(path: Path, frame: np.ndarray, seconds: int = 3, fps: int = 5) -> None:
    spec = importlib.util.spec_from_file_location("fake_webcam", REPO / "tests" / "fake_webcam.py")
    fake_webcam = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_webcam)
    fake_webcam.write_y4m(path, [frame] * (seconds * fps), fps=fps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photo", required=True, help="The group photo the fake webcam shows.")
    parser.add_argument("--output", default=str(REPO / "docs" / "images" / "app-live.jpg"))
    parser.add_argument("--height", type=int, default=1420, help="Pixels of the page's top kept.")
    parser.add_argument("--width", type=int, default=960, help="Camera width in pixels.")
    parser.add_argument("--seconds", type=float, default=20, help="How long to stream before the picture.")
    args = parser.parse_args()

    photo = Image.open(args.photo).convert("RGB")
    height = round(photo.height * args.width / photo.width / 2) * 2
    video = Path(tempfile.mkdtemp()) / "camera.y4m"
    write_y4m(video, np.asarray(photo.resize((args.width, height), Image.LANCZOS)))

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port)], cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}"])
            page = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 1000}).new_page()
            page.goto(url)
            page.get_by_role("button", name="Click to Access Webcam").click()
            page.get_by_role("button", name=re.compile("capture photo|start recording")).first.click()
            page.wait_for_timeout(args.seconds * 1000)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.output, full_page=True, quality=80,
                            clip={"x": 0, "y": 0, "width": 1280, "height": args.height})
            browser.close()
        print(f"wrote {args.output}")
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    main()
