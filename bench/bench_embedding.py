"""Embedding and head benchmark (not a test).

    .venv/bin/python bench/bench_embedding.py [--quick] [--n 64] [--batch 32]

1. Embedding throughput (items/s) of `flywheel.features.embedding.embed_images` on image
   files (decode, resize, normalise, forward), against the baseline measured in the same
   run: the bare batched forward of the same backbone on tensors already preprocessed
   (ratio = ours / bare; goal >= 0.9 on a GPU, where the forward is fast and the
   preprocessing could starve it). The backbone has the architecture of
   `facebook/dinov2-small` (12 layers, 384 wide, 224 px) with random weights: nothing is
   downloaded and speed does not depend on the weight values. `--quick`: a tiny ResNet.
2. Head training time for 500 labels (a linear head on 384-d vectors through the same
   Lightning `fit` as every run) against today's from-scratch CNN on the 8x8 pixels of
   the same 500 digits (ratio = head / CNN).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flywheel.features import embedding as E  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.features import backbones  # noqa: E402

console = Console()


def dinov2_small_dir(root: Path) -> Path:
    from transformers import Dinov2Config

    folder = root / "dinov2-small-shape"
    Dinov2Config(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14
    ).save_pretrained(folder)
    return folder


def write_images(root: Path, n: int, side: int) -> list[str]:
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        grey = np.round(images[i % len(images)] * 255 / 16).astype(np.uint8)
        rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
        img = Image.fromarray(rgb, "RGB").resize((side, side), Image.Resampling.NEAREST)
        path = root / f"item-{i:05d}.jpg"
        img.save(path, quality=90)
        paths.append(str(path))
    return paths


def embedding_throughput(settings, paths: list[str]) -> tuple[float, float, int]:
    backbone = E.backbone_for(settings)
    side, size = backbone.spec.image_size, settings.backbone_batch
    E.embed_images(paths[:size], settings)  # warm up both paths
    t = time.perf_counter()
    E.embed_images(paths, settings)
    ours = len(paths) / (time.perf_counter() - t)
    batches = [
        np.stack([E.preprocess(p, side, backbone.mean, backbone.std) for p in paths[i : i + size]])
        for i in range(0, len(paths), size)
    ]
    t = time.perf_counter()
    for batch in batches:
        E.forward(backbone, batch)
    bare = len(paths) / (time.perf_counter() - t)
    return ours, bare, backbone.dim


def head_vs_cnn(n: int = 500) -> tuple[float, float, float, float]:
    import pandas as pd
    from sklearn.datasets import load_digits

    from flywheel.training.data import prepare
    from flywheel.training.model import build_head
    from flywheel.training.run import TrainConfig, fit

    digits = load_digits()
    ids = [f"digits-{i:04d}" for i in range(n)]
    labels = [str(t) for t in digits.target[:n]]
    pixels = (digits.data[:n] / 16.0).astype(np.float32)
    projection = np.random.default_rng(0).normal(size=(64, 384)).astype(np.float32)
    embedding = np.tanh(pixels @ projection / 4)  # 384-d vectors that carry the digit
    frame = pd.DataFrame(
        {"item_id": ids, "label": labels, "pixels": list(pixels), "embedding": list(embedding)}
    )
    classes = [str(d) for d in range(10)]
    config = TrainConfig(max_epochs=40, patience=5, cpu_threads=1, track=False)
    out = []
    for column, d in (("embedding", 384), ("pixels", 64)):
        splits = prepare(frame, classes, d, 0.2, 0.1, column=column)
        model = build_head("linear", d, 10) if column == "embedding" else None
        arch = "linear" if column == "embedding" else "cnn"
        from dataclasses import replace

        fitted = fit(
            splits, replace(config, arch=arch), 8, root_dir=tempfile.mkdtemp(), model=model
        )
        from flywheel.training.module import predict

        acc = float(
            (predict(fitted.module.model, splits.holdout.x) == splits.holdout.y).float().mean()
        )
        out += [fitted.seconds, acc]
    return out[0], out[1], out[2], out[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny backbone, 32 images")
    parser.add_argument("--n", type=int, help="images to embed (default 64; quick 128)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-embedding-") as tmp:
        root = Path(tmp)
        if args.quick:
            backbone, side, n = str(backbones.config_dir(root)), 32, args.n or 128
        else:
            backbone, side, n = str(dinov2_small_dir(root)), 224, args.n or 64
        settings = make_settings(
            root / "home",
            representation="embedding",
            backbone=backbone,
            backbone_weights="none",
            backbone_image_size=side,
            backbone_batch=args.batch,
        )
        paths = write_images(root / "images", n, max(side, 256))
        ours, bare, dim = embedding_throughput(settings, paths)
        head_s, head_acc, cnn_s, cnn_acc = head_vs_cnn()
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    table = Table(title=f"embedding and head, {device}")
    for col in ("measure", "flywheel", "baseline", "ratio"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    name = "tiny ResNet 32 px" if args.quick else "dinov2-small shape 224 px"
    table.add_row(
        f"embed {n} images, {name}, d={dim} (items/s)",
        f"{ours:.1f}",
        f"{bare:.1f} bare forward",
        f"{ours / bare:.2f}",
    )
    table.add_row(
        "train on 500 labels (s); holdout acc",
        f"{head_s:.1f} linear head; {head_acc:.3f}",
        f"{cnn_s:.1f} CNN on pixels; {cnn_acc:.3f}",
        f"{head_s / cnn_s:.2f}",
    )
    console.print(table)


if __name__ == "__main__":
    main()
