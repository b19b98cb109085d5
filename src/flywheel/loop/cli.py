"""`flywheel loop ...` and `flywheel demo`.

The KFP side (compile, local pipeline runs, submit) lives in `pipelines/`: these commands
reach it through `flywheel.engines`, so the loop package never names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flywheel import engines
from flywheel.settings import get_settings

app = typer.Typer(
    help="Turn the flywheel: run, compile and submit the pipelines.", no_args_is_help=True
)
console = Console()

Engine = Annotated[str, typer.Option(help="kfp: the local Kubeflow pipeline; direct: in-process")]


def _pipelines():
    return engines.pipelines()


def _check_engine(engine: str) -> None:
    if engine not in engines.ENGINES:
        raise typer.BadParameter(f"engine must be kfp or direct, not {engine!r}")


@app.command()
def run(
    engine: Engine = "kfp",
    k: Annotated[int | None, typer.Option(help="Items to send to labelling.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Acquisition function.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for a running turn (else skip).")] = True,
) -> None:
    """Run one turn of the loop against the local services."""
    from flywheel.loop.lock import BUSY_EXIT, Busy
    from flywheel.loop.turn import run_turn

    _check_engine(engine)
    params = {"lr": lr} if lr else None
    try:
        with console.status(
            "one turn: export -> features -> train -> evaluate -> register -> deploy -> select"
        ):
            report = run_turn(
                get_settings(), engine=engine, params=params, k=k, strategy=strategy, wait=wait
            )
    except Busy as exc:
        console.print(f"{exc}: not starting another; the next turn takes the new labels")
        raise typer.Exit(BUSY_EXIT) from None  # distinct: the caller re-arms its labels
    console.print(
        f"{report.n_labels} labels -> v{report.model_version} "
        f"(holdout {report.challenger_accuracy:.3f}); champion v{report.champion_version} "
        f"({'promoted' if report.promoted else 'kept'}); {len(report.selected)} items queued; "
        f"{report.seconds:.1f} s"
    )
    console.print("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.steps.items()))


@app.command()
def sweep(
    lrs: Annotated[str, typer.Option(help="Comma-separated learning rates.")] = "0.003,0.01,0.03",
) -> None:
    """Run the sweep pipeline locally (ParallelFor over learning rates, best one registered)."""
    trials = [{"lr": float(v)} for v in lrs.split(",") if v.strip()]
    outputs = _pipelines().run_local(get_settings(), "sweep", params=trials)
    console.print(f"sweep done: {outputs.get('pick-best', {})}")


@app.command("compile")
def compile_(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("build/pipelines"),
) -> None:
    """Compile both pipelines to IR YAML for Kubeflow Pipelines."""
    for name, path in _pipelines().compile_all(out).items():
        console.print(f"{name}: {path}")


@app.command()
def submit(
    pipeline: Annotated[str, typer.Option(help="turn, sweep or drift")] = "turn",
    schedule: Annotated[str | None, typer.Option(help="Cron: a recurring run.")] = None,
    upload_only: Annotated[bool, typer.Option(help="Only upload the pipelines.")] = False,
) -> None:
    """Compile and submit to the Kubeflow Pipelines endpoint (FLYWHEEL_KFP_HOST)."""
    run_id = _pipelines().submit(get_settings(), pipeline, schedule, upload_only)
    console.print(f"submitted: {run_id}")


@app.command()
def experiment(
    seeds: Annotated[int, typer.Option(help="How many seeds (each: starting labels + init).")] = 10,
    start: Annotated[int, typer.Option(help="Starting labels.")] = 20,
    step: Annotated[int, typer.Option(help="Labels added per round.")] = 40,
    budget: Annotated[int, typer.Option(help="Most training labels.")] = 400,
    target: Annotated[float, typer.Option(help="Target holdout accuracy.")] = 0.90,
    arm: Annotated[
        list[str] | None, typer.Option(help="Arms (repeat); default: every strategy.")
    ] = None,
    max_steps: Annotated[int, typer.Option(help="Optimiser steps per round (fixed).")] = 150,
    first_seed: Annotated[int, typer.Option(help="First seed (split a run across processes).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Result folder.")] = None,
) -> None:
    """Active learning vs random sampling on the demo collection (several seeds)."""
    from flywheel.loop.experiment import ExperimentConfig, default_arms, run_experiment

    cfg = ExperimentConfig(
        arms=list(arm) if arm else default_arms(),
        seeds=list(range(first_seed, first_seed + seeds)),
        start=start,
        step=step,
        budget=budget,
        target=target,
        max_steps=max_steps,
    )
    result = run_experiment(get_settings(), cfg, out)
    console.print(f"plot: {result['plot']}")


def demo(
    turns: Annotated[int, typer.Option(help="Turns to run now.")] = 3,
    engine: Engine = "kfp",
) -> None:
    """Turn the flywheel unattended on the demo digits (continues where it stopped)."""
    from flywheel.loop.demo import run_demo

    _check_engine(engine)
    run_demo(get_settings(), turns=turns, engine=engine)
