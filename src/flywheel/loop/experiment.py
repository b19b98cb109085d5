"""`flywheel loop experiment`: does active learning need fewer labels than random sampling?

Both strategies start from the same random seed set and add `step` labels per round, chosen
by the acquisition function (the champion's uncertainty) or at random; every round trains a
fresh model with the same training code as the loop (`flywheel.training.fit`) and scores it
on the same fixed holdout. Repeated over several seeds, it reports the labels each strategy
needed to reach the target holdout accuracy, and plots accuracy against labels.

It runs on the demo collection's features computed by the same representation function as
the feature store (no services needed: the demo answer key plays the annotator), so it can
run many rounds in minutes. Results go to `<home>/data/experiment/`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from flywheel.settings import Settings
from flywheel.splits import is_holdout

console = Console()


@dataclass
class ExperimentConfig:
    strategies: tuple[str, ...] = ("margin", "random")
    seeds: tuple[int, ...] = (0, 1, 2)
    start: int = 20
    step: int = 20
    budget: int = 300
    target: float = 0.90
    max_epochs: int = 30


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


def _fit_and_score(settings, ids, x, labels, labelled, holdout, seed, max_epochs):
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
    splits = prepare(
        frame, list(settings.label_classes), x.shape[1], settings.holdout_fraction, 0.1
    )
    config = TrainConfig(seed=seed, max_epochs=max_epochs, track=False, accelerator="cpu")
    fitted = fit(splits, config, settings.image_size, root_dir=settings.home / "experiment-ckpt")
    model = Probabilities(fitted.module.model.float().cpu().eval())
    with torch.no_grad():
        pred = model(splits.holdout.x).argmax(1)
    accuracy = float((pred == splits.holdout.y).float().mean())
    return accuracy, model


def run_experiment(settings: Settings, config: ExperimentConfig | None = None) -> dict:
    import torch

    from flywheel.labelling import select_for_labelling

    cfg = config or ExperimentConfig()
    ids, x, labels = demo_features(settings)
    holdout = [i for i in ids if is_holdout(i, settings.holdout_fraction)]
    pool_all = [i for i in ids if not is_holdout(i, settings.holdout_fraction)]
    index = {item: i for i, item in enumerate(ids)}
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {s: {} for s in cfg.strategies}
    rounds = len(range(cfg.start, cfg.budget + 1, cfg.step))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("experiment", total=len(cfg.seeds) * len(cfg.strategies) * rounds)
        for seed in cfg.seeds:
            initial = random.Random(seed).sample(pool_all, cfg.start)
            for strategy in cfg.strategies:
                labelled = list(initial)
                curve = curves[strategy].setdefault(seed, [])
                while True:
                    progress.update(
                        task, description=f"seed {seed} {strategy} {len(labelled)} labels"
                    )
                    acc, model = _fit_and_score(
                        settings, ids, x, labels, labelled, holdout, seed, cfg.max_epochs
                    )
                    curve.append((len(labelled), acc))
                    progress.advance(task)
                    if len(labelled) + cfg.step > cfg.budget:
                        break
                    chosen_set = set(labelled)
                    pool = [i for i in pool_all if i not in chosen_set]
                    with torch.no_grad():
                        probs = model(torch.from_numpy(x[[index[i] for i in pool]])).numpy()
                    labelled += select_for_labelling(probs, pool, cfg.step, strategy, seed)
    result = summarise(curves, cfg)
    out = settings.data_dir / "experiment"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    result["plot"] = str(plot(result, out / "active_vs_random.png"))
    _print(result)
    return result


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    for n, acc in curve:
        if acc >= target:
            return n
    return None


def summarise(curves, cfg: ExperimentConfig) -> dict:
    out = {"config": {k: v for k, v in vars(cfg).items()}, "strategies": {}}
    for strategy, by_seed in curves.items():
        needed = {seed: labels_to_reach(c, cfg.target) for seed, c in by_seed.items()}
        reached = [n for n in needed.values() if n is not None]
        out["strategies"][strategy] = {
            "curves": {str(s): c for s, c in by_seed.items()},
            "labels_to_target": {str(s): n for s, n in needed.items()},
            "mean_labels_to_target": float(np.mean(reached)) if reached else None,
            "reached": f"{len(reached)}/{len(needed)}",
        }
    return out


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, data in result["strategies"].items():
        curves = list(data["curves"].values())
        ns = [n for n, _ in curves[0]]
        accs = np.array([[a for _, a in c] for c in curves])
        mean = accs.mean(axis=0)
        ax.plot(ns, mean, marker="o", label=f"{strategy} (mean of {len(curves)} seeds)")
        ax.fill_between(ns, accs.min(axis=0), accs.max(axis=0), alpha=0.15)
    ax.axhline(result["config"]["target"], color="grey", linestyle="--", label="target")
    ax.set_xlabel("training labels")
    ax.set_ylabel("holdout accuracy")
    ax.set_title("active learning vs random sampling")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _print(result: dict) -> None:
    target = result["config"]["target"]
    table = Table("strategy", f"labels to reach {target:.0%} (per seed)", "mean", "reached")
    for strategy, data in result["strategies"].items():
        per_seed = ", ".join(
            str(v) if v is not None else "-" for v in data["labels_to_target"].values()
        )
        mean = data["mean_labels_to_target"]
        table.add_row(strategy, per_seed, f"{mean:.0f}" if mean else "-", data["reached"])
    console.print(table)
