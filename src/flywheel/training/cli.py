"""`flywheel train ...`: train a model, run a sweep, build the cluster TrainJob.

Heavy imports (torch, Lightning, mlflow, feast) happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flywheel.settings import get_settings

app = typer.Typer(help="Train, sweep and build TrainJobs.", no_args_is_help=True)
console = Console()


def _frame(snapshot: Path | None, frame: Path | None):
    from flywheel.training.run import load_frame

    return load_frame(get_settings(), snapshot, frame)


Snapshot = Annotated[Path | None, typer.Option(help="label snapshot parquet")]
Frame = Annotated[Path | None, typer.Option(help="parquet with item_id, label, pixels")]


@app.command()
def run(
    snapshot: Snapshot = None,
    frame: Frame = None,
    arch: Annotated[str | None, typer.Option(help="default: FLYWHEEL_MODEL_ARCH")] = None,
    width: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float, typer.Option()] = 3e-3,
    max_epochs: Annotated[int, typer.Option()] = 40,
    batch_size: Annotated[int, typer.Option()] = 64,
    seed: Annotated[int, typer.Option()] = 0,
    promote: Annotated[bool, typer.Option(help="run the promotion rule afterwards")] = False,
) -> None:
    """Train once in this process (for several processes: torchrun -m flywheel.training)."""
    from flywheel.training.run import TrainConfig, train

    settings = get_settings()
    data, sid = _frame(snapshot, frame)
    config = TrainConfig(
        arch=arch,
        width=width,
        lr=lr,
        max_epochs=max_epochs,
        batch_size=batch_size,
        seed=seed,
        snapshot_id=sid,
        progress=True,
    )
    result = train(data, settings, config)
    console.print(
        f"run {result.run_id}: holdout accuracy [bold]{result.holdout_accuracy:.4f}"
        f"[/] on {result.n_holdout} items, {result.epochs} epochs, "
        f"{result.seconds:.1f} s; registered {result.model_uri} as challenger"
    )
    if promote:
        from flywheel.registry import promote as do_promote

        d = do_promote(settings, result.version)
        console.print(f"promotion: {d.action} ({d.reason})")


@app.command()
def sweep(
    snapshot: Snapshot = None,
    frame: Frame = None,
    trials: Annotated[int, typer.Option(min=1)] = 6,
    max_epochs: Annotated[int, typer.Option()] = 20,
) -> None:
    """Optuna search over learning rate and width; each trial a child run; best registered."""
    from flywheel.training.run import TrainConfig
    from flywheel.training.sweep import run_sweep

    data, sid = _frame(snapshot, frame)
    result = run_sweep(
        data, get_settings(), TrainConfig(max_epochs=max_epochs, snapshot_id=sid), n_trials=trials
    )
    console.print(
        f"sweep {result.parent_run_id}: best trial {result.best_params} "
        f"(val {result.best_val_accuracy:.4f}); registered {result.best.model_uri}"
    )


@app.command()
def trainjob(
    name: Annotated[str, typer.Option()] = "flywheel-train",
    nodes: Annotated[
        int | None, typer.Option(min=1, help="Default: FLYWHEEL_TRAIN_NUM_NODES")
    ] = None,
    gpus: Annotated[int | None, typer.Option(min=0, help="Default: FLYWHEEL_TRAIN_GPUS")] = None,
    frame: Annotated[
        str, typer.Option(help="training set URI the pods read")
    ] = "s3://flywheel/training-sets/latest.parquet",
    output: Annotated[Path | None, typer.Option("-o", help="write the YAML here")] = None,
) -> None:
    """Build the Kubeflow Trainer v2 TrainJob (image from FLYWHEEL_IMAGE), validate it
    against its CRD, print YAML."""
    import yaml

    from flywheel.crds import validate_custom_resource
    from flywheel.training.trainjob import build_trainjob

    settings = get_settings()
    job = build_trainjob(settings, name=name, num_nodes=nodes, gpus_per_node=gpus, frame=frame)
    validate_custom_resource(job, settings.crds_dir)
    text = yaml.safe_dump(job, sort_keys=False)
    if output:
        output.write_text(text)
        console.print(f"wrote {output} (valid TrainJob)")
    else:
        print(text)
