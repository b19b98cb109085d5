"""Label export benchmark: time to export 1,797 annotated tasks (not a test).

    .venv/bin/python bench/bench_export.py [--home DIR] [--repeat N]

Starts Label Studio under DIR (default build/bench-export, kept so a second run skips the
slow first start and the labelling), loads the 1,797 demo digits, lets the demo annotator
label every one of them, then times, each over N repeats (median):

- baseline: the raw JSON_MIN export download (`GET /api/projects/<id>/export`), bytes only
- raw JSON: the full JSON export download the flywheel reads (annotations with authors)
- export_labels: the whole step: download + rules + content hash + parquet snapshot

and prints one table with the ratio to the baseline. The services are stopped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flywheel import services  # noqa: E402
from flywheel.labelling import DemoAnnotator, export_labels, init_demo  # noqa: E402
from flywheel.labelling import client as lsc  # noqa: E402
from tests.conftest import make_settings  # noqa: E402

console = Console()


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / "build" / "bench-export")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = make_settings(args.home.resolve())
    try:
        with console.status("starting Label Studio (first start: 1-2 minutes)..."):
            t0 = time.perf_counter()
            services.up(settings, ["label-studio"])
        console.print(f"Label Studio up in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        rows = init_demo(settings)
        console.print(f"collection init: {len(rows)} items in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        created = DemoAnnotator(settings).label(list(rows.item_id))
        took = time.perf_counter() - t0
        console.print(
            f"demo annotator: {created} new annotations in {took:.1f} s"
            + (f" ({took / created * 1000:.0f} ms each)" if created else "")
        )

        ls = lsc.client(settings)
        project = lsc.get_project(settings, ls)

        def download(kind: str):
            return lambda: b"".join(
                ls.projects.exports.download_sync(
                    project.id, export_type=kind, download_all_tasks=True
                )
            )

        base, raw_min = timed(download("JSON_MIN"), args.repeat)
        full, raw = timed(download("JSON"), args.repeat)
        step, snap = timed(lambda: export_labels(settings), args.repeat)
        table = Table(
            title=f"export of {len(snap.frame)} annotated tasks (median of {args.repeat})"
        )
        for col in ("what", "seconds", "MB", "ratio to baseline"):
            table.add_column(col, justify="left" if col == "what" else "right")
        table.add_row(
            "baseline: raw JSON_MIN download", f"{base:.3f}", f"{len(raw_min) / 1e6:.2f}", "1.00"
        )
        table.add_row(
            "raw JSON download (what export reads)",
            f"{full:.3f}",
            f"{len(raw) / 1e6:.2f}",
            f"{full / base:.2f}",
        )
        table.add_row(
            "export_labels -> parquet snapshot",
            f"{step:.3f}",
            f"{snap.path.stat().st_size / 1e6:.2f}",
            f"{step / base:.2f}",
        )
        console.print(table)
        console.print(f"snapshot {snap.snapshot_id}: {snap.path}")
    finally:
        services.down(settings)


if __name__ == "__main__":
    main()
