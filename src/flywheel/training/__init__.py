"""Training: a classifier trained with PyTorch Lightning (DDP-ready), tracked in MLflow.

    train(frame, settings, config) -> TrainResult   # library call (see run.py)
    python -m flywheel.training ...                 # the entry point, alone or under torchrun
    flywheel train run|sweep|trainjob               # the CLI (cli.py)

Modules: model (architectures by name), data (checks, splits, DataModule), module
(LightningModule), run (train(), fit() and the entry point; `run`, not `train`, so
the module does not shadow the function), tracking (MLflow), sweep (Optuna, child runs),
trainjob (Kubeflow Trainer v2 TrainJob). Names here load lazily so that importing the
package pulls in neither torch nor mlflow until needed.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "TrainResult", "train", "fit", "run_sweep", "build_trainjob"]


def __getattr__(name: str):
    if name in ("TrainConfig", "TrainResult", "train", "fit"):
        from flywheel.training import run

        return getattr(run, name)
    if name == "run_sweep":
        from flywheel.training.sweep import run_sweep

        return run_sweep
    if name == "build_trainjob":
        from flywheel.training.trainjob import build_trainjob

        return build_trainjob
    raise AttributeError(name)
