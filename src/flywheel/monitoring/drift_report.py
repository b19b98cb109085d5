"""The drift report as one self-contained HTML page (figures inlined as PNG).

Plots of our own with matplotlib (already a dependency) rather than Evidently: the report
shows exactly the three tests the decision uses (flywheel.monitoring.drift) on any vector
representation, and adds no dependency tree of its own to the platform image.

Figures: a 2-D projection (principal components of the training items) of both sides; the
confidence distributions; the predicted-class mix. Tables: the tests with their p-values,
the per-collection slices, the most drifted items.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figures(report, reference, current, ref_conf, cur_conf) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    mean = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    basis = vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 4))
    r, c = (reference - mean) @ basis, (current - mean) @ basis
    ax.scatter(r[:, 0], r[:, 1], s=8, alpha=0.5, label=f"training ({len(r)})")
    ax.scatter(c[:, 0], c[:, 1], s=8, alpha=0.5, label=f"served ({len(c)})")
    ax.set_xlabel("PC 1 (training items)")
    ax.set_ylabel("PC 2")
    ax.legend()
    ax.set_title("representation")
    out.append(("Representation: 2-D projection", _png(fig)))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, 1, 21)
    ax.hist(ref_conf, bins=bins, alpha=0.6, density=True, label="holdout (training time)")
    ax.hist(cur_conf, bins=bins, alpha=0.6, density=True, label="served")
    ax.set_xlabel("top class probability")
    ax.legend()
    ax.set_title("confidence")
    out.append(("Confidence", _png(fig)))

    mix = report.class_mix
    ref = np.asarray(mix["reference"], float)
    cur = np.asarray(mix["current"], float)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.arange(len(mix["classes"]))
    ax.bar(x - 0.2, ref / max(ref.sum(), 1), 0.4, label="training items")
    ax.bar(x + 0.2, cur / max(cur.sum(), 1), 0.4, label="served")
    ax.set_xticks(x, mix["classes"])
    ax.set_ylabel("share of predictions")
    ax.legend()
    ax.set_title("predicted-class mix")
    out.append(("Predicted-class mix", _png(fig)))
    return out


def _rows(rows: list[list]) -> str:
    return "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )


def _p(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def render(report, reference, current, ref_conf, cur_conf) -> str:
    verdict = "DRIFT FOUND" if report.drift_found else "no drift"
    colour = "#b00020" if report.drift_found else "#1b5e20"
    threshold = report.alpha / len(report.p_values)
    tests = _rows(
        [[name, _p(p), "yes" if p < threshold else "no"] for name, p in report.p_values.items()]
    )
    slices = _rows(
        [
            [s["slice"], s["n"], _p(s["mmd2"]), _p(s["p_value"]), s.get("against", "-")]
            for s in report.slices
        ]
    )
    items = _rows(
        [
            [
                t["item_id"] or "(no id)",
                t["source"],
                f"{t['witness']:.4f}",
                t["predicted"],
                f"{t['confidence']:.3f}",
            ]
            for t in report.top_items
        ]
    )
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, png in _figures(report, reference, current, ref_conf, cur_conf)
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flywheel drift report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }}
.verdict {{ color: {colour}; font-size: 1.6em; font-weight: bold; }}
</style></head><body>
<h1>Drift report</h1>
<p class="verdict" id="verdict">{verdict}</p>
<p>Champion version <b>{html.escape(report.champion_version)}</b>, trained on label snapshot
<code>{html.escape(report.snapshot_id)}</code> ({report.n_reference} items), against
<b id="n-current">{report.n_current}</b> items served since {html.escape(report.window_start)}.
Drift when a p-value is below {report.alpha} / {len(report.p_values)} = {threshold:.4g}.
{report.tagged} items were tagged "drift review" in Label Studio.</p>
<h2>Tests</h2>
<table id="tests"><tr><th>test</th><th>p-value</th><th>drift</th></tr>{tests}</table>
<h2>Figures</h2>{figures}
<h2>Collections</h2>
<table id="slices"><tr><th>slice</th><th>served items</th><th>MMD&sup2;</th><th>p-value</th>
<th>compared with</th></tr>{slices}</table>
<h2>Most drifted items</h2>
<table id="items"><tr><th>item</th><th>source</th><th>witness</th><th>predicted</th>
<th>confidence</th></tr>{items}</table>
<ul>{notes}</ul>
</body></html>
"""
