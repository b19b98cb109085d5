"""Intake benchmark: a generated collection, a large master, and a re-run (not a test).

    .venv/bin/python bench/bench_intake.py [--n 50000] [--home DIR] [--side 12000x9000]

Each measured phase runs in its own child process, which reports its time (after its
imports) and its peak RSS (its own and its worker processes', `getrusage`); baselines are
measured in the same run:

1. collection: N generated photos-like JPEG/PNG/TIFF files (96-256 px, mixed modes).
   - baseline: the old intake per file (Pillow `verify` + sha256 + copy under the home)
   - intake: `add_collection` (full decode, sRGB card, phash, process pool), no Label Studio
   - features: `build_features` (representation over a process pool, Feast apply +
     materialize into the embedded stores)
2. large master (default 12000x9000 RGB, LZW TIFF, and the same as a JPEG):
   - baseline: Pillow decoding the master whole, then a thumbnail
   - intake card: `intake.make_card` (libvips `thumbnail`, streamed)
   - Pillow draft (JPEG only): Pillow's DCT-scaled decode
3. re-run on the unchanged folder vs a plain directory scan (`os.walk` + `stat`).

Prints one table per part with ratios against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def _peak_mb() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rss_mb": own, "children_rss_mb": kids}


# --- phases (each in a child process) ---------------------------------------------------------


def _settings(home: Path):
    from tests.conftest import make_settings

    return make_settings(home)


def phase_generate(src: Path, n: int) -> dict:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        folder = src / f"box{i // 1000:03d}"
        folder.mkdir(exist_ok=True)
        side = int(rng.integers(96, 257))
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((side, side * 3 // 4), Image.Resampling.BILINEAR)
        kind = i % 4
        if kind == 0:
            img.save(folder / f"{i:06d}.jpg", quality=85)
        elif kind == 1:
            img.convert("L").save(folder / f"{i:06d}.png")
        elif kind == 2:
            img.save(folder / f"{i:06d}.tif", compression="tiff_lzw")
        else:
            img.quantize(64).save(folder / f"{i:06d}.png")
    return {}


def phase_baseline_intake(src: Path, home: Path) -> dict:
    import hashlib

    from PIL import Image

    dest = home / "baseline-items"
    dest.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    n = 0
    for here, _, names in os.walk(src):
        for name in names:
            path = Path(here) / name
            with Image.open(path) as img:
                img.verify()
            data = path.read_bytes()
            hashlib.sha256(data).hexdigest()
            shutil.copyfile(path, dest / f"{n:06d}{path.suffix}")
            n += 1
    return {"items": n, "seconds": time.perf_counter() - start}


def phase_intake(src: Path, home: Path) -> dict:
    from flywheel.labelling.collection import add_collection

    settings = _settings(home)
    start = time.perf_counter()
    result = add_collection(settings, src, register=False)
    return {
        "seconds": time.perf_counter() - start,
        "items": result.count("added") + result.count("changed"),
        "unchanged": result.count("unchanged"),
        "rejected": result.count("rejected"),
    }


def phase_features(home: Path) -> dict:
    from flywheel.features.build import build_features

    settings = _settings(home)
    start = time.perf_counter()
    built = build_features(settings)
    return {"items": built.new_rows, "seconds": time.perf_counter() - start}


def phase_scan(src: Path) -> dict:
    start = time.perf_counter()
    n = 0
    for here, _, names in os.walk(src):
        for name in names:
            os.stat(Path(here) / name)
            n += 1
    return {"items": n, "seconds": time.perf_counter() - start}


def phase_master(path: Path, how: str) -> dict:
    from PIL import Image

    from flywheel.labelling.intake import Limits, make_card

    start = time.perf_counter()
    if how == "pillow-whole":
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as img:
            img.load()
            img.thumbnail((480, 480))
    elif how == "pillow-draft":
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as img:
            img.draft("RGB", (480, 480))
            img.load()
            img.thumbnail((480, 480))
    else:
        make_card(path, 0, Limits(480, 10**10, "first"))
    return {"seconds": time.perf_counter() - start}


def phase_make_master(path: Path, width: int, height: int) -> dict:
    import pyvips

    # a smooth pattern with texture, written strip by strip (never whole in memory)
    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    r = (x * 255 / width).cast("uchar")
    g = (y * 255 / height).cast("uchar")
    b = ((x + y) % 256).cast("uchar")
    img = r.bandjoin([g, b]).copy(interpretation="srgb")
    if path.suffix == ".tif":
        img.tiffsave(str(path), compression="lzw")
    else:
        img.jpegsave(str(path), Q=85)
    return {}


PHASES = {
    "generate": lambda a: phase_generate(Path(a.src), a.n),
    "baseline-intake": lambda a: phase_baseline_intake(Path(a.src), Path(a.home)),
    "intake": lambda a: phase_intake(Path(a.src), Path(a.home)),
    "features": lambda a: phase_features(Path(a.home)),
    "scan": lambda a: phase_scan(Path(a.src)),
    "master": lambda a: phase_master(Path(a.master), a.how),
    "make-master": lambda a: phase_make_master(Path(a.master), *map(int, a.side.split("x"))),
}


def run_phase(name: str, **kw) -> dict:
    args = [sys.executable, __file__, "--phase", name]
    for key, value in kw.items():
        args += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.setdefault("seconds", seconds)  # phases time themselves, after their imports
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--home", type=Path, default=ROOT / "build" / "bench-intake")
    parser.add_argument("--side", default="12000x9000")
    parser.add_argument("--phase")
    parser.add_argument("--src")
    parser.add_argument("--master")
    parser.add_argument("--how")
    args = parser.parse_args()
    if args.phase:
        out = PHASES[args.phase](args)
        print(json.dumps({**out, **_peak_mb()}))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    home = args.home.resolve()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    src = home / "collection"
    with console.status(f"generating {args.n:,} images..."):
        run_phase("generate", src=src, n=args.n)

    def rss(r):
        return max(r["rss_mb"], r["children_rss_mb"])

    table = Table(
        title=f"1. intake + features of {args.n:,} generated images ({os.cpu_count()} CPUs)"
    )
    for col in ("step", "items", "seconds", "items/s", "peak RSS MB", "vs baseline"):
        table.add_column(col, justify="right" if col != "step" else "left")
    results = {}
    for label, name, kw in (
        ("baseline: Pillow verify + hash + copy", "baseline-intake", {"src": src, "home": home}),
        ("intake (decode, card, phash)", "intake", {"src": src, "home": home / "home"}),
        ("features build (+ Feast)", "features", {"home": home / "home"}),
    ):
        with console.status(label):
            results[name] = r = run_phase(name, **kw)
        base = results["baseline-intake"]
        ratio = (r["items"] / r["seconds"]) / (base["items"] / base["seconds"])
        table.add_row(
            label,
            f"{r['items']:,}",
            f"{r['seconds']:.1f}",
            f"{r['items'] / r['seconds']:.0f}",
            f"{rss(r):.0f}",
            f"{ratio:.2f}x items/s",
        )
    console.print(table)

    table = Table(title="3. re-running intake on the unchanged folder")
    for col in ("step", "seconds", "vs baseline"):
        table.add_column(col)
    scan = run_phase("scan", src=src)
    rerun = run_phase("intake", src=src, home=home / "home")
    assert rerun["items"] == 0 and rerun["unchanged"] == args.n, rerun
    table.add_row("baseline: directory scan (os.walk + stat)", f"{scan['seconds']:.2f}", "1.00x")
    table.add_row(
        "intake re-run (adds nothing)",
        f"{rerun['seconds']:.2f}",
        f"{rerun['seconds'] / scan['seconds']:.2f}x",
    )
    console.print(table)

    table = Table(title=f"2. one {args.side} master -> a 480 px card")
    for col in ("master", "how", "seconds", "peak RSS MB", "time vs baseline", "RSS vs baseline"):
        table.add_column(col)
    for suffix in (".tif", ".jpg"):
        master = home / f"master{suffix}"
        with console.status(f"writing {master.name}"):
            run_phase("make-master", master=master, side=args.side)
        hows = ["pillow-whole", "vips-card"] + (["pillow-draft"] if suffix == ".jpg" else [])
        base = None
        for how in hows:
            r = run_phase("master", master=master, how=how)
            base = base or r
            table.add_row(
                f"{master.name} ({master.stat().st_size / 1e6:.0f} MB)",
                how + (" (baseline)" if r is base else ""),
                f"{r['seconds']:.2f}",
                f"{rss(r):.0f}",
                f"{r['seconds'] / base['seconds']:.2f}x",
                f"{rss(r) / rss(base):.2f}x",
            )
    console.print(table)


if __name__ == "__main__":
    main()
