"""Feature store benchmark: online lookups and materialization (not a test).

    .venv/bin/python bench/bench_features.py [--quick]

Online lookup latency for 1 and 64 ids (p50/p99 over repeated calls), three ways:
`online_features` in-process, the Feast feature server over HTTP (keep-alive), and the
baseline, measured in the same run: a direct sqlite read of the same stored bytes plus
the protobuf decode into the same float32 matrix. Then materialize time for 1,797 and
50,000 items (the offline rows written directly) against a baseline that writes the
same serialized rows into a fresh sqlite table. Prints one table; the ratio column is
time / baseline. Everything runs under a temporary home on free loopback ports.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flywheel import services  # noqa: E402
from flywheel.features import build_features, online_features, store_for  # noqa: E402
from flywheel.features.build import _schema, _write_offline, apply, materialize  # noqa: E402
from flywheel.features.store import feast_dir  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.features.catalogue import write_catalogue  # noqa: E402

console = Console()


def percentiles(fn, repeat: int) -> tuple[float, float]:
    for _ in range(min(20, repeat)):  # warm up
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def sqlite_reader(settings):
    """The baseline: read the online rows' bytes straight from sqlite and decode them."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    conn = sqlite3.connect(feast_dir(settings) / "online.db")
    table = "flywheel_item_features"

    def key(item_id: str) -> bytes:
        proto = EntityKey(join_keys=["item_id"], entity_values=[Value(string_val=item_id)])
        return serialize_entity_key(proto, entity_key_serialization_version=3)

    def read(ids: list[str]) -> np.ndarray:
        keys = [key(i) for i in ids]
        rows = conn.execute(
            f"SELECT entity_key, value FROM {table} WHERE feature_name = 'pixels' "
            f"AND entity_key IN ({','.join('?' * len(keys))})",
            keys,
        ).fetchall()
        found = {k: Value.FromString(v).float_list_val.val for k, v in rows}
        return np.asarray([found[k] for k in keys], dtype=np.float32)

    return read


def online_rows(settings, ids, repeat):
    import httpx

    store_for(settings)  # build the store once, as a server does
    direct = sqlite_reader(settings)
    np.testing.assert_array_equal(direct(ids), online_features(ids, settings))
    client = httpx.Client(base_url=settings.url(settings.feast_port), timeout=60)
    body = {"features": ["item_features:pixels"], "entities": {"item_id": ids}}

    def http():
        client.post("/get-online-features", json=body).raise_for_status()

    base = percentiles(lambda: direct(ids), repeat)
    rows = [("baseline: sqlite bytes + decode", base, base)]
    rows.append(
        (
            "online_features (in-process)",
            percentiles(lambda: online_features(ids, settings), repeat),
            base,
        )
    )
    store = store_for(settings)
    entity_rows = [{"item_id": i} for i in ids]

    def raw():
        store.get_online_features(features=body["features"], entity_rows=entity_rows).to_dict()

    rows.append(("Feast get_online_features", percentiles(raw, repeat), base))
    rows.append(("feature server (HTTP)", percentiles(http, repeat), base))
    return [(f"{len(ids)} id(s): {name}", p, b) for name, p, b in rows]


def synthetic_rows(n: int):
    """n offline rows: digit vectors repeated, one event time."""
    import pyarrow as pa
    from sklearn.datasets import load_digits

    pixels = (load_digits().data / 16.0).astype(np.float32)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table(
        {
            "item_id": [f"item-{i:06d}" for i in range(n)],
            "event_timestamp": [when] * n,
            "created": [when] * n,
            "pixels": [pixels[i % len(pixels)] for i in range(n)],
            "collection": ["digits"] * n,
            "accession_date": ["2020-01-01"] * n,
            "image_sha256": [f"{i:064x}" for i in range(n)],
        },
        schema=_schema(),
    )


def sqlite_write_baseline(path: Path, table) -> float:
    """Write the same rows (serialized the way Feast stores them) into a fresh sqlite."""
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    t = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE t (entity_key BLOB, feature_name TEXT, value BLOB, "
        "event_ts TIMESTAMP, PRIMARY KEY (entity_key, feature_name))"
    )
    now = datetime.now(UTC)
    cols = table.to_pydict()
    rows = []
    for i, item in enumerate(cols["item_id"]):
        key = item.encode()
        rows.append(
            (
                key,
                "pixels",
                Value(float_list_val=FloatList(val=cols["pixels"][i])).SerializeToString(),
                now,
            )
        )
        for name in ("collection", "accession_date", "image_sha256"):
            rows.append((key, name, Value(string_val=cols[name][i]).SerializeToString(), now))
    conn.executemany("INSERT OR REPLACE INTO t VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return time.perf_counter() - t


def materialize_rows(work: Path, n: int):
    settings = make_settings(work / f"mat-{n}")
    table = synthetic_rows(n)
    _write_offline(settings, table)
    apply(settings)
    t = time.perf_counter()
    materialize(settings)
    took = time.perf_counter() - t
    base = sqlite_write_baseline(work / f"baseline-{n}.db", table)
    assert online_features([f"item-{n - 1:06d}"], settings).shape == (1, 64)
    return (f"materialize {n:,} items (s)", (took, took), (base, base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 5,000 not 50,000")
    args = parser.parse_args()
    repeat = 100 if args.quick else 500
    work = Path(tempfile.mkdtemp(prefix="bench-features-"))
    settings = make_settings(work / "home")
    rows = []
    with console.status("writing the 1,797-digit catalogue and building features..."):
        write_catalogue(settings, 1797)
        t = time.perf_counter()
        build_features(settings)
        console.print(f"build_features, 1,797 images: {time.perf_counter() - t:.1f} s")
    try:
        with console.status("starting the feature server..."):
            services.up(settings, ["feast"])
        ids64 = [f"digits-{i:04d}" for i in range(0, 1797, 28)][:64]
        with console.status("timing online lookups..."):
            rows += online_rows(settings, ["digits-0042"], repeat)
            rows += online_rows(settings, ids64, repeat)
    finally:
        services.down(settings)
    for n in (1797, 5000 if args.quick else 50_000):
        with console.status(f"materializing {n:,} items..."):
            rows.append(materialize_rows(work, n))

    table = Table(
        "measure",
        "p50 ms",
        "p99 ms",
        "baseline p50",
        "ratio p50",
        title="flywheel features (lookups in ms; materialize rows in s)",
    )
    for name, (p50, p99), (b50, _) in rows:
        table.add_row(name, f"{p50:.3f}", f"{p99:.3f}", f"{b50:.3f}", f"{p50 / b50:.1f}x")
    console.print(table)
    console.print(f"plot: {plot(rows, ROOT / 'build' / 'bench' / 'bench_features.png')}")


def plot(rows, path: Path) -> Path:
    """Lookup latencies (p50 bars, p99 ticks) on a log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lookups = [(name, p) for name, p, _ in rows if "id(s)" in name]
    fig, ax = plt.subplots(figsize=(8, 4))
    y = range(len(lookups))
    ax.barh(y, [p50 for _, (p50, _) in lookups], color="tab:blue", label="p50")
    ax.scatter([p99 for _, (_, p99) in lookups], y, color="tab:red", marker="|", s=200, label="p99")
    ax.set_yticks(list(y), [name for name, _ in lookups], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("online lookup latency (ms, log scale)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
