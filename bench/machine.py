"""The machine a benchmark ran on: every benchmark prints this next to its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(threads: int | None = None) -> dict:
    """CPU, cores, load, and the versions that shape the timings."""
    import cv2
    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "usable_cores": usable,
            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": threads or torch.get_num_threads(),
            "transformers": transformers.__version__, "onnxruntime": ort.__version__, "opencv": cv2.__version__,
            "numpy": np.__version__}


def machine_line(threads: int | None = None) -> str:
    info = machine_info(threads)
    return (f"{info['cpu']}, {info['usable_cores']} usable cores, load {info['load_average_1_5_15']}, "
            f"torch {info['torch']} ({info['torch_threads']} threads), onnxruntime {info['onnxruntime']}, "
            f"OpenCV {info['opencv']}, Python {info['python']}")
