"""Hyperparameter search: Optuna (TPE) over learning rate and width, one MLflow child run
per trial under a parent run; the best trial's model is logged in its run and registered.

Trials are chosen by validation loss (the best checkpoint's), never by the holdout, which
stays the untouched yardstick for promotion. Runs in one process (use torchrun for big
single runs, not for sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from flywheel.training.run import TrainConfig, TrainResult


@dataclass
class SweepResult:
    parent_run_id: str
    best_run_id: str
    best_params: dict
    best_val_accuracy: float | None
    best_val_loss: float | None
    best: TrainResult
    trials: list[dict]


def run_sweep(
    frame,
    settings,
    config: TrainConfig | None = None,
    n_trials: int = 6,
    lr_range: tuple[float, float] = (1e-3, 3e-2),
    widths: tuple[int, ...] = (8, 16, 32),
) -> SweepResult:
    """Search, log every trial as a child run, register the best trial's model."""
    import mlflow
    import optuna

    from flywheel.training import tracking
    from flywheel.training.data import prepare
    from flywheel.training.run import _config_for, finalize, params, tags, tracked_fit

    config = _config_for(settings, config or TrainConfig())
    splits = prepare(
        frame,
        list(settings.label_classes),
        settings.image_size**2 * config.in_channels,
        settings.holdout_fraction,
        config.val_fraction,
    )
    tracking.check_tracking(settings.tracking_uri)
    tracking.setup(settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.seed)
    )
    best: dict = {}
    trials: list[dict] = []
    space = {
        "sweep_trials": n_trials,
        "sweep_lr_range": list(lr_range),
        "sweep_widths": list(widths),
    }

    with tracking.run(
        settings,
        f"sweep-{config.arch}",
        {**params(config, settings, splits), **space},
        tags(config),
    ) as parent_id:

        def objective(trial: optuna.Trial) -> float:
            cfg = replace(
                config,
                lr=trial.suggest_float("lr", *lr_range, log=True),
                width=trial.suggest_categorical("width", list(widths)),
            )
            with tracking.run(
                settings,
                f"trial-{trial.number}",
                params(cfg, settings, splits),
                tags(cfg),
                nested=True,
            ) as run_id:
                fitted = tracked_fit(splits, cfg, settings, run_id)
                score = fitted.val_loss if fitted.val_loss is not None else float("inf")
                mlflow.log_metrics(
                    {"best_val_loss": score, "val_accuracy_final": fitted.val_accuracy or 0.0}
                )
            trials.append(
                {
                    "number": trial.number,
                    "run_id": run_id,
                    "lr": cfg.lr,
                    "width": cfg.width,
                    "val_loss": score,
                    "val_accuracy": fitted.val_accuracy,
                }
            )
            if not best or score < best["score"]:
                best.update(score=score, fitted=fitted, run_id=run_id, config=cfg)
            return score

        study.optimize(objective, n_trials=n_trials)
        with tracking.run(
            settings, "", {}, {"sweep_best": "true"}, nested=True, run_id=best["run_id"]
        ):
            result = finalize(best["fitted"], splits, settings, best["config"], best["run_id"])
        mlflow.log_metrics(
            {"best_val_loss": best["score"], "best_holdout_accuracy": result.holdout_accuracy}
        )
        mlflow.set_tags({"best_run_id": best["run_id"], "best_version": str(result.version)})
    cfg = best["config"]
    return SweepResult(
        parent_id,
        best["run_id"],
        {"lr": cfg.lr, "width": cfg.width},
        best["fitted"].val_accuracy,
        best["fitted"].val_loss,
        result,
        trials,
    )
