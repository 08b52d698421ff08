"""The container's HEALTHCHECK: the model answers, not merely the web server.

    python deploy/healthcheck.py          # exit 0: healthy; 1: not

Calls the app's /health API (one forward pass on a blank face, outside the model's queue) over
Gradio's two-step HTTP call API on 127.0.0.1:$GRADIO_SERVER_PORT, standard library only.
"""

import json
import os
import sys
import urllib.request

URL = f"http://127.0.0.1:{os.environ.get('GRADIO_SERVER_PORT', '7860')}/gradio_api/call/health"


def main() -> int:
    try:
        request = urllib.request.Request(URL, data=b'{"data": []}', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            event_id = json.load(response)["event_id"]
        with urllib.request.urlopen(f"{URL}/{event_id}", timeout=8) as response:
            body = response.read().decode()
    except (OSError, ValueError, KeyError) as error:
        print(f"unhealthy: {error}")
        return 1
    healthy = "event: complete" in body and '"status": "ok"' in body
    print("healthy" if healthy else f"unhealthy: {body[-300:]}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
