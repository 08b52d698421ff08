"""Load on the running app: throughput, latency and memory with 1-8 concurrent clients, image bombs
amid normal traffic, and a soak. Everything on 127.0.0.1, bounded in count and time.

    python bench/load.py [--requests 12] [--clients 1 2 4 8] [--soak-seconds 600] [--json OUT]

The app runs as users start it (`python app.py`, the embedded model, its default queue and limits)
in a subprocess; its resident memory (VmRSS) is sampled every 50 ms. Each client is a
`gradio_client.Client` calling `/analyze` on tests/assets/astronaut.jpg (512x512, one face), as
a team's script would.
  load   per concurrency level: every client sends --requests calls; requests/s, p50/p95 latency, peak RSS;
  bombs  two image bombs at once (a 656 KB PNG claiming 15000x15000, a 2 KB JPEG header claiming
         14000x14000) while two clients keep calling: time to refusal, peak RSS growth;
  soak   two clients calling for --soak-seconds: requests, failures, RSS at start, each minute, and end.
  build  one client calling while another builds an adapter for a room (7 labels x --build-references faces,
         cut from the photo and its mirror; the server's default method): /analyze latency before and
         during the build, and how long the build took (a build held the model's slot until 2026-12-07).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import machine_line
from paths import REPO
from PIL import Image

ASTRONAUT = REPO / "tests" / "assets" / "astronaut.jpg"


class RssSampler(threading.Thread):
    """Samples a process's resident memory (MB) every 50 ms; `peak(since)` is the largest since a mark."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.running = pid, [], True

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def run(self) -> None:
        while self.running:
            try:
                self.samples.append((time.monotonic(), self.rss_mb()))
            except OSError:
                return
            time.sleep(0.05)

    def peak(self, since: float) -> float:
        return max((rss for when, rss in self.samples if when >= since), default=0.0)


def start_app() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    from gradio_client import Client
    while time.monotonic() < deadline:
        try:
            Client(url, verbose=False)
            return process, url
        except Exception:  # not up yet
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the app did not start within 180 s")


def client_calls(url: str, requests: int, stop_at: float | None = None) -> tuple[list[float], int]:
    """One client's calls: latencies (s) and failures; until `stop_at` (monotonic) when given."""
    from gradio_client import Client, handle_file
    client, latencies, failures = Client(url, verbose=False), [], 0
    done = 0
    while (stop_at is None and done < requests) or (stop_at is not None and time.monotonic() < stop_at):
        start = time.perf_counter()
        try:
            client.predict(handle_file(str(ASTRONAUT)), api_name="/analyze")
            latencies.append(time.perf_counter() - start)
        except Exception:
            failures += 1
        done += 1
    return latencies, failures


def bomb_files(folder: Path) -> list[Path]:
    png = folder / "bomb.png"
    Image.new("1", (15000, 15000)).save(png, optimize=True)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (14000).to_bytes(2, "big") + (14000).to_bytes(2, "big")
    jpeg = folder / "liar.jpg"
    jpeg.write_bytes(bytes(data))
    return [png, jpeg]


def refused_in(url: str, path: Path) -> tuple[float, str]:
    from gradio_client import Client, handle_file
    client = Client(url, verbose=False)
    start = time.perf_counter()
    try:
        client.predict(handle_file(str(path)), api_name="/analyze")
        answer = "ANSWERED (not refused)"
    except Exception as error:
        answer = str(error).splitlines()[0][:90]
    return time.perf_counter() - start, answer


def room_builder(url: str, references: int, folder: str):
    """A client that has added `references` faces for each of the 7 labels, and a function that builds an
    adapter from them and returns its seconds."""
    from gradio_client import Client, handle_file
    client = Client(url, verbose=False)
    mirrored = Path(folder) / "mirrored.jpg"
    Image.open(ASTRONAUT).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    photos = [handle_file(str(path)) for path in (ASTRONAUT, mirrored)]
    for label in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"):
        client.predict([photos[i % 2] for i in range(references)], None, label, api_name="/add_references")

    def build() -> float:
        start = time.perf_counter()
        client.predict("bench-room", "bench-load-key-0123456789", api_name="/build_adapter")
        return time.perf_counter() - start
    return build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=12, help="Calls per client at each concurrency level.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--build-references", type=int, default=5, help="Faces per label in the build phase (0: skip).")
    parser.add_argument("--json", help="Write the figures here.")
    args = parser.parse_args()

    process, url = start_app()
    sampler = RssSampler(process.pid)
    sampler.start()
    figures: dict = {"machine": machine_line(), "load": [], "idle_rss_mb": round(sampler.rss_mb(), 1)}
    try:
        client_calls(url, 2)  # warm-up
        for clients in args.clients:
            mark, start = time.monotonic(), time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(lambda _: client_calls(url, args.requests), range(clients)))
            seconds = time.perf_counter() - start
            latencies = sorted(t for lat, _ in results for t in lat)
            figures["load"].append({
                "clients": clients, "requests": clients * args.requests, "failures": sum(f for _, f in results),
                "requests_per_s": round(len(latencies) / seconds, 2),
                "p50_ms": round(1000 * statistics.median(latencies)),
                "p95_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]),
                "peak_rss_mb": round(sampler.peak(mark), 1)})
            print(figures["load"][-1], flush=True)

        with tempfile.TemporaryDirectory() as folder:
            bombs = bomb_files(Path(folder))
            before, mark = sampler.rss_mb(), time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                traffic = [pool.submit(client_calls, url, 6) for _ in range(2)]
                refusals = list(pool.map(lambda path: refused_in(url, path), bombs))
                served = [future.result() for future in traffic]
            figures["bombs"] = {
                "refusals": [{"file": path.name, "size_kb": round(path.stat().st_size / 1024, 1),
                              "seconds": round(seconds, 2), "answer": answer}
                             for path, (seconds, answer) in zip(bombs, refusals)],
                "normal_calls": sum(len(lat) for lat, _ in served), "normal_failures": sum(f for _, f in served),
                "rss_before_mb": round(before, 1), "peak_rss_mb": round(sampler.peak(mark), 1)}
            print(figures["bombs"], flush=True)

        if args.build_references > 0:
            idle, _ = client_calls(url, 20)
            with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(1) as pool:
                building = pool.submit(room_builder(url, args.build_references, folder))
                during = []
                while not building.done():  # one call at a time, as a live view sends frames
                    during += client_calls(url, 1)[0]
                build_seconds = building.result()
            figures["build"] = {"references_per_label": args.build_references, "build_seconds": round(build_seconds, 1),
                                "idle_p50_ms": round(1000 * statistics.median(idle)),
                                "during_calls": len(during),
                                "during_p50_ms": round(1000 * statistics.median(during)) if during else None,
                                "during_max_ms": round(1000 * max(during)) if during else None}
            print(figures["build"], flush=True)

        if args.soak_seconds > 0:
            start_rss, stop_at = sampler.rss_mb(), time.monotonic() + args.soak_seconds
            by_minute = []  # growth that levels off is warm-up; growth that keeps its slope is a leak
            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(client_calls, url, 0, stop_at) for _ in range(2)]
                while not all(future.done() for future in futures):
                    time.sleep(min(60.0, max(stop_at - time.monotonic(), 0.0) + 1.0))
                    by_minute.append(round(sampler.rss_mb(), 1))
                soaked = [future.result() for future in futures]
            figures["soak"] = {"seconds": args.soak_seconds, "clients": 2, "rss_mb_by_minute": by_minute,
                               "calls": sum(len(lat) + f for lat, f in soaked),
                               "failures": sum(f for _, f in soaked),
                               "rss_start_mb": round(start_rss, 1), "rss_end_mb": round(sampler.rss_mb(), 1),
                               "p95_ms": round(1000 * sorted(t for lat, _ in soaked for t in lat)[
                                   int(0.95 * sum(len(lat) for lat, _ in soaked)) - 1])}
            print(figures["soak"], flush=True)
    finally:
        sampler.running = False
        process.terminate()
        process.wait(timeout=30)

    print(f"machine: {figures['machine']}")
    print("| clients | requests | failures | requests/s | p50 ms | p95 ms | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for row in figures["load"]:
        print(f"| {row['clients']} | {row['requests']} | {row['failures']} | {row['requests_per_s']} | "
              f"{row['p50_ms']} | {row['p95_ms']} | {row['peak_rss_mb']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
