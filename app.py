"""Run the emotion_vit app: live webcam view, photo analysis and the /analyze API.

    python app.py                       # the embedded model, on http://127.0.0.1:7860
    python app.py --model user/name     # a hub model, or --model path/to/folder
    python app.py --help                # every setting, with its default

The same as `emotion-vit app` (emotion_vit/cli.py).
"""

import sys

from emotion_vit.cli import app_command

if __name__ == "__main__":
    app_command(sys.argv[1:])
