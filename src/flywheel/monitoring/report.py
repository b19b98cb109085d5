"""`flywheel report`: one static HTML page of the loop's health.

    write_report(settings, out=None) -> Path     # default <home>/data/report.html

What it shows, and where each figure comes from:
- turns, labels per turn, accuracy vs labels, loop latency by step: the step timings
  (`<home>/data/loop/timings.jsonl`, flywheel.loop.timings); a turn starts at each
  `export_labels` record and ends with the last step before the next one;
- drift status: the last drift check (`<home>/data/monitoring/latest.json`);
- queue size: Label Studio tasks queued for labelling (`data.queued_for`) and not yet
  labelled, and the items tagged "drift review";
- served version: the predictor's `/metrics` (`flywheel_served_model_version`), and the
  registry's champion.
A source that cannot be reached shows as "unavailable (reason)"; the page is still written.
Figures are matplotlib PNGs inlined, so the file can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flywheel.settings import Settings


@dataclass
class Turn:
    started: float
    seconds: float
    n_labels: int | None
    model_version: str | None
    accuracy: float | None
    action: str | None
    steps: dict[str, float] = field(default_factory=dict)
    ok: bool = True


def turns_from_timings(records: list[dict]) -> list[Turn]:
    """Group step records into turns (a turn opens at each export_labels record)."""
    turns: list[list[dict]] = []
    for rec in sorted(records, key=lambda r: r["start"]):
        if rec["step"] == "export_labels" or not turns:
            turns.append([])
        turns[-1].append(rec)
    out = []
    for recs in turns:
        by_step = {r["step"]: r for r in recs}
        train = by_step.get("train", {})
        register = by_step.get("register", {})
        out.append(
            Turn(
                started=recs[0]["start"],
                seconds=round(max(r["end"] for r in recs) - recs[0]["start"], 3),
                n_labels=by_step.get("export_labels", {}).get("n_labels"),
                model_version=train.get("model_version"),
                accuracy=train.get("holdout_accuracy"),
                action=register.get("action"),
                steps={r["step"]: r["seconds"] for r in recs},
                ok=all(r.get("ok", True) for r in recs),
            )
        )
    return out


def _try(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - any failure: shown on the page, not raised
        return None, f"unavailable ({type(exc).__name__}: {str(exc)[:120]})"


def served_version(settings: Settings) -> str:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{settings.url(settings.predictor_port)}/metrics", timeout=3).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "flywheel_served_model_version" and s.labels.get("server") == "predictor":
                return str(int(s.value))
    return "none (no champion loaded)"


def _reachable(url: str) -> None:
    """A quick probe first: the service clients retry for minutes when nobody answers."""
    import httpx

    httpx.get(url, timeout=3)


def queue(settings: Settings) -> dict:
    from flywheel.labelling import client as lsc

    _reachable(f"{settings.label_studio_base_url.rstrip('/')}/health")
    tasks = lsc.project_tasks(settings)
    unlabelled = [
        t for t in tasks if not any(not a.get("was_cancelled") for a in t.get("annotations") or [])
    ]
    return {
        "queued": sum(1 for t in unlabelled if t["data"].get("queued_for")),
        "unlabelled": len(unlabelled),
        "drift_review": sum(1 for t in tasks if t["data"].get("drift_review")),
    }


def champion(settings: Settings) -> str:
    from flywheel.registry import versions

    if settings.tracking_uri.startswith("http"):
        _reachable(f"{settings.tracking_uri.rstrip('/')}/health")
    found = [v.version for v in versions(settings) if "champion" in v.aliases]
    return found[0] if found else "none"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figures(turns: list[Turn]) -> list[tuple[str, str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    n = list(range(1, len(turns) + 1))
    scored = [t for t in turns if t.n_labels is not None and t.accuracy is not None]
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    ax.plot([t.n_labels for t in scored], [t.accuracy for t in scored], "o-")
    ax.set_xlabel("labels")
    ax.set_ylabel("holdout accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("accuracy vs labels")
    out.append(("fig-accuracy", "Accuracy vs labels", _png(fig)))

    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    ax.bar(n, [t.n_labels or 0 for t in turns])
    ax.set_xticks(n)
    ax.set_xlabel("turn")
    ax.set_ylabel("labels in the snapshot")
    ax.set_title("labels per turn")
    out.append(("fig-labels", "Labels per turn", _png(fig)))

    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    steps = sorted(
        {s for t in turns for s in t.steps}, key=lambda s: -sum(t.steps.get(s, 0) for t in turns)
    )
    bottom = [0.0] * len(turns)
    for step in steps:
        values = [t.steps.get(step, 0.0) for t in turns]
        ax.bar(n, values, bottom=bottom, label=step)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("turn")
    ax.set_ylabel("seconds")
    ax.set_xticks(n)
    ax.set_title("loop latency by step")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out.append(("fig-latency", "Loop latency", _png(fig)))
    return out


def render(settings: Settings) -> str:
    from flywheel.loop import timings
    from flywheel.monitoring.drift_check import latest

    turns = turns_from_timings(timings.read(settings))
    served, served_err = _try(lambda: served_version(settings))
    champ, champ_err = _try(lambda: champion(settings))
    q, q_err = _try(lambda: queue(settings))
    drift = latest(settings)
    if drift is None:
        drift_text = "no drift check yet (`flywheel monitor drift`)"
    else:
        verdict = "DRIFT FOUND" if drift["drift_found"] else "no drift"
        drift_text = (
            f"{verdict} (champion v{drift['champion_version']}, {drift['n_current']} served "
            f"items since {drift['window_start'][:16]}, {drift['tagged']} tagged for review)"
        )
    last = turns[-1] if turns else None
    esc = html.escape
    cards = [
        ("turns", "Turns", str(len(turns))),
        ("labels", "Labels (last turn)", str(last.n_labels) if last else "-"),
        (
            "accuracy",
            "Holdout accuracy (last turn)",
            f"{last.accuracy:.3f}" if last and last.accuracy is not None else "-",
        ),
        ("latency", "Loop latency (last turn)", f"{last.seconds:.1f} s" if last else "-"),
        ("served-version", "Served version", served or served_err),
        ("champion", "Champion in the registry", champ or champ_err),
        ("queue-size", "Queued for labelling", str(q["queued"]) if q else q_err),
        ("drift-status", "Drift", drift_text),
    ]
    card_html = "".join(
        f'<div class="card"><div class="label">{esc(label)}</div>'
        f'<div class="value" id="{key}">{esc(value)}</div></div>'
        for key, label, value in cards
    )
    figs = "".join(
        f'<figure><img id="{key}" alt="{esc(title)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{esc(title)}</figcaption></figure>"
        for key, title, png in (_figures(turns) if turns else [])
    )
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{esc(str(c))}</td>"
            for c in (
                i,
                datetime.fromtimestamp(t.started, UTC).strftime("%Y-%m-%d %H:%M"),
                t.n_labels if t.n_labels is not None else "-",
                t.model_version or "-",
                f"{t.accuracy:.3f}" if t.accuracy is not None else "-",
                t.action or "-",
                f"{t.seconds:.1f}",
                "ok" if t.ok else "failed",
            )
        )
        + "</tr>"
        for i, t in enumerate(turns, 1)
    )
    extra = f"; {q['unlabelled']} unlabelled, {q['drift_review']} tagged drift review" if q else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flywheel: loop health</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 80em; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 0.8em; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; min-width: 11em; }}
.label {{ color: #555; font-size: 0.85em; }} .value {{ font-size: 1.3em; font-weight: bold; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head><body>
<h1>Loop health: {esc(settings.model_name)}</h1>
<p>Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC for project
{esc(settings.label_studio_project)}{esc(extra)}.</p>
<div class="cards">{card_html}</div>
<h2>Figures</h2>{figs or "<p>No turn has run yet.</p>"}
<h2>Turns</h2>
<table id="turn-table"><tr><th>turn</th><th>started (UTC)</th><th>labels</th><th>version</th>
<th>holdout accuracy</th><th>decision</th><th>seconds</th><th>status</th></tr>{rows}</table>
</body></html>
"""


def write_report(settings: Settings, out: str | Path | None = None) -> Path:
    path = Path(out) if out else settings.data_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(settings))
    return path
