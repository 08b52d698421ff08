"""Training and inference images/s of candidate vision-transformer architectures on this CPU.

    python bench/architectures.py                 # all candidates
    python bench/architectures.py pvt_v2-b0-64    # one

What chose the shipped model: at FER2013's 48-64 px, a plain ViT's cost grows with its token count,
while hybrids with convolutional stems (PVTv2, LeViT, MobileViT, CvT) are cheaper per image. Each row
is forward + backward + AdamW step on a batch of 128 random images (training) and a forward pass
under inference_mode (inference); all stock transformers classes that pipeline() loads.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import machine_line
from transformers import AutoConfig, AutoModelForImageClassification

TINY_VIT = dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768)
CANDIDATES = {  # name: (model type, config, input size)
    "vit-tiny-p6-48": ("vit", dict(image_size=48, patch_size=6, **TINY_VIT), 48),
    "vit-tiny-p4-48": ("vit", dict(image_size=48, patch_size=4, **TINY_VIT), 48),
    "pvt_v2-b0-64": ("pvt_v2", {}, 64),
    "pvt_v2-b0-48": ("pvt_v2", {}, 48),
    "levit-128S-64": ("levit", dict(image_size=64), 64),
    "mobilevit-xxs-64": ("mobilevit", dict(image_size=64, hidden_sizes=[64, 80, 96], expand_ratio=2.0,
                                           neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320]), 64),
    "cvt-small-48": ("cvt", dict(embed_dim=[64, 192, 384], depth=[1, 2, 4], num_heads=[1, 3, 6]), 48),
    "resnet18-64 (CNN reference)": ("resnet", dict(layer_type="basic", depths=[2, 2, 2, 2],
                                                   hidden_sizes=[64, 128, 256, 512]), 64),
}


def measure(model_type: str, config: dict, size: int, batch: int, steps: int) -> tuple[float, float, float]:
    model = AutoModelForImageClassification.from_config(AutoConfig.for_model(model_type, num_labels=7, **config))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    pixels, labels = torch.randn(batch, 3, size, size), torch.randint(0, 7, (batch,))
    model.train()
    for step in range(steps + 1):
        if step == 1:  # the first step warms up
            start = time.perf_counter()
        model(pixel_values=pixels, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train = batch * steps / (time.perf_counter() - start)
    model.eval()
    with torch.inference_mode():
        model(pixel_values=pixels)
        start = time.perf_counter()
        for _ in range(steps):
            model(pixel_values=pixels)
    inference = batch * steps / (time.perf_counter() - start)
    return sum(p.numel() for p in model.parameters()) / 1e6, train, inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"candidates (default: all): {', '.join(CANDIDATES)}")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    print(f"machine: {machine_line()}\n")
    print("| architecture | input | params | train images/s | inference images/s |\n|---|---|---|---|---|")
    for name in args.names or CANDIDATES:
        model_type, config, size = CANDIDATES[name]
        params, train, inference = measure(model_type, config, size, args.batch, args.steps)
        print(f"| {name} | {size} px | {params:.2f}M | {train:.0f} | {inference:.0f} |", flush=True)


if __name__ == "__main__":
    main()
