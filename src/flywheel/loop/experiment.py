"""`flywheel loop experiment`: does active learning need fewer labels than random sampling?

Every arm (an acquisition strategy from `flywheel.labelling.acquisition.STRATEGIES`, random
included) starts a seed from the same random starting labels and adds `step` labels per round,
chosen by the arm from the current model's probabilities on the unlabelled pool. Every round
trains a fresh model with the loop's training code (`flywheel.training.run.fit`) under a fixed
training budget (`max_steps` optimiser steps, no validation split, so no early stopping on a
handful of items) and scores it on the same fixed holdout.

Each seed `s` has two independent random streams: the starting labels come from
`label_seed = s`, the model initialisation from `init_seed = 10_000 + s`; all arms of a seed
share both, so the arms are paired by seed.

The summary (`summarise`, a pure function over the curves) reports per arm:
- the mean learning curve with a 95 % t-interval across seeds at every label count;
- the area under the learning curve (trapezoids, normalised by the label range: the mean
  holdout accuracy over the budget) per seed, its mean and 95 % interval;
- labels to reach the target: a run that never reaches it within the budget is *censored* at
  the budget, not dropped. The Kaplan-Meier estimate of "still below target after n labels"
  gives the median labels-to-target and the restricted mean (the area under that curve up to
  the budget, RMST), which counts a censored run as needing at least the budget;
- a paired two-sided Wilcoxon signed-rank test across seeds of each arm's AUC against random.

It runs on the demo collection's features computed by the same representation function as
the feature store (no services: the demo answer key plays the annotator). Results go to
`<home>/data/experiment/` (JSON and a plot); the committed run is
`docs/results/active_vs_random.json` / `.png`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from flywheel.errors import InputError
from flywheel.settings import Settings
from flywheel.splits import is_holdout

console = Console()

BASELINE = "random"
INIT_SEED_OFFSET = 10_000


def default_arms() -> list[str]:
    """Every acquisition strategy the labelling package knows (a new one joins by itself)."""
    from flywheel.labelling.acquisition import STRATEGIES

    return [BASELINE, *[s for s in STRATEGIES if s != BASELINE]]


@dataclass
class ExperimentConfig:
    arms: list[str] = field(default_factory=default_arms)
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    start: int = 20
    step: int = 40
    budget: int = 400
    target: float = 0.90
    max_steps: int = 150  # optimiser steps per round: the fixed training budget
    threads: int = 1

    def check(self) -> ExperimentConfig:
        from flywheel.labelling.acquisition import STRATEGIES

        unknown = [a for a in self.arms if a not in STRATEGIES]
        if unknown:
            raise InputError(
                f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}"
            )
        if BASELINE not in self.arms:
            raise InputError(f"the arms must include the {BASELINE!r} baseline")
        if len(self.seeds) < 2:
            raise InputError("an experiment needs at least two seeds for its intervals")
        if not (0 < self.start <= self.budget) or self.step <= 0:
            raise InputError("need 0 < start <= budget and step > 0")
        if not 0 < self.target <= 1:
            raise InputError(f"target accuracy must be in (0, 1], got {self.target}")
        return self


def demo_features(settings: Settings):
    """(item_ids, X, labels) of the demo collection, featurised like the feature store."""
    import pandas as pd

    from flywheel.features import representation
    from flywheel.labelling import init_demo, read_answers, read_catalogue

    if not settings.catalogue_path.exists():
        init_demo(settings, register=False)
    catalogue = read_catalogue(settings).sort_values("item_id")
    answers = read_answers(settings)
    catalogue = catalogue[catalogue["item_id"].isin(answers)]
    x = np.stack([representation(Path(p), settings) for p in catalogue["image_path"]])
    ids = catalogue["item_id"].astype(str).tolist()
    labels = [answers[i] for i in ids]
    return ids, x.astype(np.float32), pd.Series(labels, index=ids)


def _fit_and_score(settings, ids, x, labels, labelled, holdout, init_seed, max_steps):
    """Train on `labelled` (+ the holdout for scoring); return (accuracy, model)."""
    import pandas as pd
    import torch

    from flywheel.training import TrainConfig
    from flywheel.training.data import prepare
    from flywheel.training.model import Probabilities
    from flywheel.training.run import fit

    rows = sorted(set(labelled) | set(holdout))
    index = {item: i for i, item in enumerate(ids)}
    frame = pd.DataFrame(
        {"item_id": rows, "label": [labels[i] for i in rows], "pixels": [x[index[i]] for i in rows]}
    )
    # val_fraction=0: no validation split, no early stopping; a fixed number of steps
    splits = prepare(frame, list(settings.label_classes), x.shape[1], settings.holdout_fraction, 0)
    config = TrainConfig(
        seed=init_seed,
        max_epochs=100_000,
        max_steps=max_steps,
        val_fraction=0.0,
        track=False,
        accelerator="cpu",
        cpu_threads=1,  # small models on a busy CPU: one thread beats spinning ones
    )
    fitted = fit(splits, config, settings.image_size, root_dir=settings.home / "experiment-ckpt")
    model = Probabilities(fitted.module.model.float().cpu().eval())
    with torch.no_grad():
        pred = model(splits.holdout.x).argmax(1)
    accuracy = float((pred == splits.holdout.y).float().mean())
    return accuracy, model


def run_curve(settings, data, arm: str, seed: int, cfg: ExperimentConfig, on_round=None):
    """One arm, one seed: the learning curve [(labels, holdout accuracy), ...]."""
    import torch

    from flywheel.labelling import select_for_labelling

    ids, x, labels = data
    holdout = [i for i in ids if is_holdout(i, settings.holdout_fraction)]
    pool_all = [i for i in ids if not is_holdout(i, settings.holdout_fraction)]
    index = {item: i for i, item in enumerate(ids)}
    labelled = random.Random(seed).sample(pool_all, cfg.start)
    curve: list[tuple[int, float]] = []
    while True:
        acc, model = _fit_and_score(
            settings, ids, x, labels, labelled, holdout, INIT_SEED_OFFSET + seed, cfg.max_steps
        )
        curve.append((len(labelled), acc))
        if on_round:
            on_round(len(labelled), acc)
        if len(labelled) + cfg.step > cfg.budget:
            return curve
        chosen = set(labelled)
        pool = [i for i in pool_all if i not in chosen]
        with torch.no_grad():
            probs = model(torch.from_numpy(x[[index[i] for i in pool]])).numpy()
        # the round number varies random's draw between rounds; seed keeps it reproducible
        labelled += select_for_labelling(probs, pool, cfg.step, arm, seed * 1000 + len(curve))


def _load_curves(path: Path, cfg: ExperimentConfig) -> dict[tuple[str, int], list]:
    """Curves already finished under the same settings (a stopped run resumes from them)."""
    done = {}
    if not path.exists():
        return done
    key = _run_key(cfg)
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a stop
        if row.get("key") == key:
            done[(row["arm"], int(row["seed"]))] = [tuple(p) for p in row["curve"]]
    return done


def _run_key(cfg: ExperimentConfig) -> str:
    return f"start={cfg.start},step={cfg.step},budget={cfg.budget},steps={cfg.max_steps}"


def run_experiment(settings: Settings, config: ExperimentConfig | None = None, out=None) -> dict:
    """Run every (seed, arm) curve not yet in `<out>/curves.jsonl`, then summarise all.

    Several processes may share one `out` (e.g. `--first-seed`): each skips the curves the
    others have written."""
    import torch

    cfg = (config or ExperimentConfig()).check()
    out = Path(out) if out else settings.data_dir / "experiment"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "curves.jsonl"
    done = _load_curves(log, cfg)
    todo = [(s, a) for s in cfg.seeds for a in cfg.arms if (a, s) not in done]
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    rounds = len(range(cfg.start, cfg.budget + 1, cfg.step))
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    try:
        data = demo_features(settings) if todo else None
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("experiment", total=len(todo) * rounds)
            for seed, arm in todo:
                done.update(_load_curves(log, cfg))  # another process may have run it
                if (arm, seed) in done:
                    progress.advance(task, rounds)
                    continue

                def advance(n, acc, seed=seed, arm=arm):
                    progress.update(task, description=f"seed {seed} {arm} {n} labels {acc:.3f}")
                    progress.advance(task)

                curve = run_curve(settings, data, arm, seed, cfg, advance)
                done[(arm, seed)] = curve
                row = {"key": _run_key(cfg), "arm": arm, "seed": seed, "curve": curve}
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                if not console.is_terminal:
                    console.print(f"done: seed {seed} {arm} {curve[-1]}")
    finally:
        torch.set_num_threads(threads)
    curves = {a: {s: done[(a, s)] for s in cfg.seeds} for a in cfg.arms}
    result = summarise(curves, cfg)
    (out / "active_vs_random.json").write_text(json.dumps(result, indent=1) + "\n")
    result["plot"] = str(plot(result, out / "active_vs_random.png"))
    print_table(result)
    return result


# --- summary: pure functions over curves -------------------------------------------------


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first label count whose accuracy reaches `target`; None: censored (never reached)."""
    for n, acc in curve:
        if acc >= target:
            return n
    return None


def ci95(values) -> list[float]:
    """A two-sided 95 % t-interval of the mean across seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return [mean, mean]
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return [mean - half, mean + half]


def auc(curve: list[tuple[int, float]]) -> float:
    """Area under the learning curve, normalised by its label range (mean accuracy)."""
    ns = np.array([n for n, _ in curve], dtype=float)
    accs = np.array([a for _, a in curve], dtype=float)
    if len(ns) < 2:
        return float(accs[0])
    return float(np.trapezoid(accs, ns) / (ns[-1] - ns[0]))


def kaplan_meier(times: list[int | None], horizon: int) -> dict:
    """Kaplan-Meier for labels-to-target; None = censored at `horizon` (never reached).

    Returns the survival steps (labels, share of runs still below target), the median (the
    first label count where that share is <= 0.5; None if it never is) and the restricted
    mean labels-to-target up to `horizon` (area under the survival curve from 0 to horizon).
    A censored run counts as needing at least `horizon` labels; it is never dropped.
    """
    events = sorted(t for t in times if t is not None)
    at_risk = len(times)
    surv, steps = 1.0, [(0, 1.0)]
    for t in sorted(set(events)):
        d = events.count(t)
        surv *= 1 - d / at_risk
        at_risk -= d
        steps.append((t, surv))
    median = next((t for t, s in steps if s <= 0.5), None)
    rmst, last_t, last_s = 0.0, 0, 1.0
    for t, s in steps[1:]:
        if t > horizon:
            break
        rmst += last_s * (t - last_t)
        last_t, last_s = t, s
    rmst += last_s * (horizon - last_t)
    return {"steps": steps, "median": median, "restricted_mean": rmst}


def wilcoxon_p(a, b) -> float | None:
    """Two-sided paired Wilcoxon signed-rank p-value; None if all pairs are equal."""
    from scipy import stats

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.any(diff != 0):
        return None
    return float(stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def summarise(curves: dict[str, dict[int, list[tuple[int, float]]]], cfg: ExperimentConfig):
    """The experiment's result (JSON-able) from the per-arm, per-seed learning curves."""
    seeds = sorted({s for by_seed in curves.values() for s in by_seed})
    for arm, by_seed in curves.items():
        if sorted(by_seed) != seeds:
            raise InputError(f"arm {arm!r} lacks curves for some seeds: every arm needs all")
    horizon = cfg.budget
    arms = {}
    for arm, by_seed in curves.items():
        ns = [n for n, _ in by_seed[seeds[0]]]
        accs = np.array([[a for _, a in by_seed[s]] for s in seeds])
        aucs = [auc(by_seed[s]) for s in seeds]
        needed = [labels_to_reach(by_seed[s], cfg.target) for s in seeds]
        km = kaplan_meier(needed, horizon)
        reached = [n for n in needed if n is not None]
        arms[arm] = {
            "curve": {
                "labels": ns,
                "mean": accs.mean(axis=0).round(4).tolist(),
                "ci95": [[round(lo, 4), round(hi, 4)] for lo, hi in map(ci95, accs.T)],
            },
            "per_seed": {str(s): [[n, round(a, 4)] for n, a in by_seed[s]] for s in seeds},
            "auc": {
                "per_seed": [round(a, 4) for a in aucs],
                "mean": round(float(np.mean(aucs)), 4),
                "ci95": [round(v, 4) for v in ci95(aucs)],
            },
            "labels_to_target": {
                "per_seed": needed,
                "censored": sum(n is None for n in needed),
                "censored_at": horizon,
                "mean_if_all_reached": float(np.mean(needed))
                if not any(n is None for n in needed)
                else None,
                "mean_of_reached": float(np.mean(reached)) if reached else None,
                "km_median": km["median"],
                "restricted_mean": round(km["restricted_mean"], 1),
                "ci95_reached": [round(v, 1) for v in ci95(reached)] if len(reached) > 1 else None,
            },
        }
    tests = {}
    if BASELINE in curves:
        base_auc = arms[BASELINE]["auc"]["per_seed"]
        base_ltt = [
            n if n is not None else horizon for n in arms[BASELINE]["labels_to_target"]["per_seed"]
        ]
        for arm in curves:
            if arm == BASELINE:
                continue
            ltt = [
                n if n is not None else horizon for n in arms[arm]["labels_to_target"]["per_seed"]
            ]
            a_auc = arms[arm]["auc"]["per_seed"]
            wins = sum(x > y for x, y in zip(a_auc, base_auc, strict=True))
            tests[arm] = {
                "vs": BASELINE,
                "test": "wilcoxon signed-rank, two-sided, paired by seed",
                "auc_diff_mean": round(float(np.mean(a_auc) - np.mean(base_auc)), 4),
                "auc_diff_ci95": [round(v, 4) for v in ci95(np.subtract(a_auc, base_auc))],
                "auc_wins": f"{wins}/{len(seeds)}",
                "auc_p": wilcoxon_p(a_auc, base_auc),
                "labels_to_target_p": wilcoxon_p(ltt, base_ltt),
            }
    config = {k: v for k, v in vars(cfg).items()}
    config["init_seed_offset"] = INIT_SEED_OFFSET
    return {
        "question": "labels needed to reach the target holdout accuracy: active vs random",
        "config": config,
        "seeds": seeds,
        "target": cfg.target,
        "arms": arms,
        "paired_tests": tests,
    }


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, data in result["arms"].items():
        c = data["curve"]
        lo = [lo for lo, _ in c["ci95"]]
        hi = [hi for _, hi in c["ci95"]]
        ltt = data["labels_to_target"]
        ax.plot(
            c["labels"],
            c["mean"],
            marker="o",
            markersize=3,
            label=f"{arm} (AUC {data['auc']['mean']:.3f}, RMST {ltt['restricted_mean']:.0f})",
        )
        ax.fill_between(c["labels"], lo, hi, alpha=0.15)
    ax.axhline(result["target"], color="grey", linestyle="--", label="target")
    ax.set_xlabel("training labels")
    ax.set_ylabel("holdout accuracy (mean, 95% CI)")
    ax.set_title(f"active learning vs random sampling, {len(result['seeds'])} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table_rows(result: dict) -> list[list[str]]:
    """arm, mean labels-to-target (reached), censored, RMST, KM median, AUC [ci95], p."""
    rows = []
    for arm, data in result["arms"].items():
        ltt, a = data["labels_to_target"], data["auc"]
        test = result["paired_tests"].get(arm)
        p = "-" if not test or test["auc_p"] is None else f"{test['auc_p']:.3g}"
        mean = ltt["mean_of_reached"]
        rows.append(
            [
                arm,
                f"{mean:.0f}" if mean is not None else "-",
                f"{ltt['censored']}/{len(ltt['per_seed'])}",
                f"{ltt['restricted_mean']:.0f}",
                str(ltt["km_median"]) if ltt["km_median"] is not None else "-",
                f"{a['mean']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]",
                p,
            ]
        )
    return rows


def print_table(result: dict) -> None:
    target = result["target"]
    table = Table(
        "arm",
        f"mean labels to {target:.0%} (reached)",
        "censored",
        "restricted mean",
        "KM median",
        "AUC [ci95]",
        "p (AUC vs random)",
        title=f"{len(result['seeds'])} seeds",
    )
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
