"""The one training entry point: alone, or under torchrun / a Kubeflow TrainJob.

    python -m flywheel.training --frame train.parquet             # one process
    torchrun --nproc_per_node=2 -m flywheel.training --frame ...  # DDP: gloo on CPU, nccl on GPU
    torchrun --nnodes=4 --nproc_per_node=8 ... -m flywheel.training --snapshot S.parquet
    python -m flywheel.training --synthetic 4096 --image-size 224 --channels 3 \
        --arch resnet50 --no-track --max-steps 120                # throughput, no MLflow

The process layout comes from the environment torchrun (or the TrainJob) sets: WORLD_SIZE,
LOCAL_WORLD_SIZE, RANK. Lightning gets devices=LOCAL_WORLD_SIZE and
num_nodes=WORLD_SIZE/LOCAL_WORLD_SIZE with strategy ddp (it refuses devices="auto" there).
GPUs train in bf16 mixed precision where supported. Only global rank 0 talks to MLflow: it
checks the server before training, logs the run, scores the holdout and registers the model.

`train(frame, settings, config)` is the library call; `fit(splits, config)` is the bare
Lightning part (no MLflow, no settings) that the sweep and the benchmarks reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import torch

from flywheel.errors import FlywheelError, InputError
from flywheel.training.data import FlywheelData, Splits, prepare, read_frame, synthetic
from flywheel.training.model import ARCHS, HEADS, Probabilities, build_head, build_model
from flywheel.training.module import ClassifierModule, predict


@dataclass
class TrainConfig:
    """How to train. `arch=None` means `settings.model_arch`."""

    arch: str | None = None
    mode: str | None = None  # scratch | head (None: settings.train_mode; auto by the frame)
    width: int | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 40
    max_steps: int = -1
    patience: int = 5
    val_fraction: float = 0.1
    seed: int = 0
    in_channels: int = 1
    compile: bool = False
    accelerator: str = "auto"  # auto | cpu | gpu
    deterministic: bool = False  # bitwise-reproducible kernels: ~30% slower on CPU
    cpu_threads: int | None = None  # torch intra-op threads for this fit (None: torch's)
    progress: bool = False
    track: bool = True  # MLflow logging and registering (rank 0)
    register: bool = True
    compare_champion: bool = True
    warm_start: bool = True  # a head starts from the champion's head where it fits
    snapshot_id: str = ""
    feature_service: str = ""
    throughput_warmup: int = 10
    root_dir: str | None = None  # checkpoints (default: <home>/training)

    def check(self) -> TrainConfig:
        if self.arch is not None and self.arch not in ARCHS + HEADS:
            raise InputError(
                f"unknown model architecture {self.arch!r}; choose one of "
                f"{', '.join(ARCHS + HEADS)}"
            )
        for name in ("lr", "batch_size", "max_epochs"):
            if getattr(self, name) <= 0:
                raise InputError(f"training option {name} must be positive")
        return self


@dataclass
class TrainResult:
    run_id: str | None
    model_uri: str | None
    version: str | None
    holdout_accuracy: float
    val_accuracy: float | None
    champion_accuracy: float | None
    n_train: int
    n_val: int
    n_holdout: int
    classes: list[str]
    epochs: int
    samples_per_s: float | None
    seconds: float
    rank: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Fitted:
    module: ClassifierModule
    epochs: int
    val_accuracy: float | None
    val_loss: float | None
    samples_per_s: float | None
    seconds: float
    world_size: int
    precision: str
    accelerator: str


# --- processes ----------------------------------------------------------------------------


def batch_size(config: TrainConfig, splits: Splits) -> int:
    """The configured batch, made smaller for a small labelled set (the early turns of the
    loop) so an epoch still has at least 8 optimiser steps."""
    return max(1, min(config.batch_size, max(8, len(splits.train) // 8)))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def layout(accelerator: str = "auto") -> dict:
    """Lightning Trainer arguments for this process: one process, or torchrun's world."""
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    gpu = accelerator == "gpu"
    bf16 = gpu and torch.cuda.is_bf16_supported()
    out = {"accelerator": accelerator, "precision": "bf16-mixed" if bf16 else "32-true"}
    if "WORLD_SIZE" in os.environ:  # torchrun / TrainJob
        from lightning.pytorch.strategies import DDPStrategy

        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        out.update(
            devices=local,
            num_nodes=max(1, world // local),
            strategy=DDPStrategy(
                process_group_backend="nccl" if gpu else "gloo", gradient_as_bucket_view=True
            ),
        )
    else:
        out.update(devices=1)
    return out


class Throughput(L.Callback):
    """Training samples/s over all ranks, after `warmup` steps (compile, cudnn autotune)."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.samples, self.start = warmup, 0, 0, None
        self.samples_per_s: float | None = None

    def _sync(self, trainer):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.steps == self.warmup:
            self._sync(trainer)
            self.start, self.samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1
        self.samples += len(batch[1]) * trainer.world_size

    def on_train_end(self, trainer, pl_module):
        if self.start is not None:
            self._sync(trainer)
            self.samples_per_s = self.samples / (time.perf_counter() - self.start)


# --- training -------------------------------------------------------------------------------


def fit(
    splits: Splits,
    config: TrainConfig,
    image_size: int,
    callbacks=(),
    root_dir: str | Path = ".",
    model=None,
) -> Fitted:
    """Train a classifier on `splits` with Lightning (no MLflow, no settings). `model`:
    a ready classifier (e.g. a head on embeddings); default: `config.arch` from scratch."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    config.check()
    _quiet(config.progress)
    L.seed_everything(config.seed, workers=True, verbose=False)
    if model is None:
        model = build_model(
            config.arch or "cnn", len(splits.classes), image_size, config.in_channels, config.width
        )
    procs = layout(config.accelerator)
    if procs["accelerator"] == "gpu":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # The inputs arrive channels-last (see model.py): match the weights before DDP wraps them.
    model = model.to(memory_format=torch.channels_last)
    module = ClassifierModule(
        model, splits.class_weights(), config.lr, config.weight_decay, compile=config.compile
    )
    has_val = len(splits.val) > 0
    throughput = Throughput(config.throughput_warmup)
    cbs = [throughput, *callbacks]
    checkpoint = None
    if has_val:
        checkpoint = ModelCheckpoint(
            monitor="val_loss", mode="min", save_top_k=1, save_weights_only=True
        )
        cbs += [EarlyStopping(monitor="val_loss", mode="min", patience=config.patience), checkpoint]
    if config.progress:
        from lightning.pytorch.callbacks import RichProgressBar

        cbs.append(RichProgressBar())
    trainer = L.Trainer(
        **procs,
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        callbacks=cbs,
        logger=False,
        enable_checkpointing=has_val,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        deterministic=config.deterministic,  # seeds are always set
        default_root_dir=str(root_dir),
        **({} if has_val else {"limit_val_batches": 0}),
        num_sanity_val_steps=0,
        log_every_n_steps=1_000_000,
    )
    threads = torch.get_num_threads()
    if config.cpu_threads:  # small models on a busy CPU: fewer threads beat spinning ones
        torch.set_num_threads(config.cpu_threads)
    started = time.perf_counter()
    try:
        trainer.fit(
            module, datamodule=FlywheelData(splits, batch_size(config, splits), config.seed)
        )
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    metrics = trainer.callback_metrics
    val_acc = float(metrics["val_accuracy"]) if "val_accuracy" in metrics else None
    val_loss = (
        float(checkpoint.best_model_score)
        if checkpoint and checkpoint.best_model_score is not None
        else None
    )
    if checkpoint and checkpoint.best_model_path and trainer.is_global_zero:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        Path(checkpoint.best_model_path).unlink(missing_ok=True)
    return Fitted(
        module,
        trainer.current_epoch,
        val_acc,
        val_loss,
        throughput.samples_per_s,
        seconds,
        trainer.world_size,
        procs["precision"],
        procs["accelerator"],
    )


def _quiet(progress: bool) -> None:
    """Keep Lightning's banners and tips out of the output unless progress is wanted."""
    import logging
    import warnings

    if not progress:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message="No complete tensor found")  # pt2 export


def _config_for(settings, config: TrainConfig) -> TrainConfig:
    return replace(
        config,
        arch=config.arch or settings.model_arch,
        feature_service=config.feature_service or settings.feature_service,
    ).check()


def train(frame, settings, config: TrainConfig | None = None) -> TrainResult:
    """Train on a labelled frame (item_id, label, pixels), log and register (rank 0).

    Checks the data and the tracking server first; raises InputError / ServiceError.
    Returns the TrainResult on every rank (run id, model URI and version on rank 0 only).
    """
    from flywheel.training import tracking
    from flywheel.training.heads import head_setup

    config = _config_for(settings, config or TrainConfig())
    if not config.snapshot_id and "snapshot_id" in getattr(frame, "columns", ()) and len(frame):
        config = replace(config, snapshot_id=str(frame["snapshot_id"].iloc[0]))
    config, column, d, rep_info = head_setup(frame, settings, config)
    if config.mode == "finetune":
        from flywheel.training import finetune

        frame, backbone = finetune.image_frame(frame, settings)
        d = 3 * backbone.spec.image_size**2
    splits = prepare(
        frame,
        list(settings.label_classes),
        d,
        settings.holdout_fraction,
        config.val_fraction,
        column=column,
    )
    model = None
    if config.mode == "head":
        from flywheel.training.heads import warm_start

        model = build_head(config.arch, d, len(splits.classes), config.width)
        if config.track and config.warm_start:
            rep_info["warm_start_from"] = str(
                warm_start(model, settings, rep_info, config.arch, splits.classes) or "none"
            )
    elif config.mode == "finetune":
        model = finetune.build(backbone, len(splits.classes))
    if not config.track:
        fitted = fit(
            splits, config, settings.image_size, root_dir=_root(settings, config), model=model
        )
        return _evaluate_only(fitted, splits)
    tracking.check_tracking(settings.tracking_uri)
    run_id = None
    if rank() == 0:
        tracking.setup(settings)
        with tracking.run(
            settings,
            f"train-{config.arch}",
            {**params(config, settings, splits), **rep_info},
            {**tags(config), **rep_info},
        ) as run_id:
            tracking.log_snapshot_input(frame, config.snapshot_id)  # the run's Datasets column
            fitted = tracked_fit(splits, config, settings, run_id, model)
            if config.mode == "finetune":
                fitted, splits, rep_info = _publish_finetuned(fitted, splits, settings)
            return finalize(fitted, splits, settings, config, run_id, rep_info)
    fitted = fit(splits, config, settings.image_size, root_dir=_root(settings, config), model=model)
    return _evaluate_only(fitted, splits, run_id)


def _publish_finetuned(fitted: Fitted, splits: Splits, settings):
    """Fine-tuned backbone -> new vectors in Feast -> the head on them, as a head model."""
    import mlflow

    from flywheel.training import finetune

    tuned, path, info = finetune.publish(settings, fitted.module.model)
    mlflow.log_artifact(str(path), artifact_path="backbone")
    mlflow.log_params({k: v for k, v in info.items() if k != "train_mode"})
    mlflow.set_tags(info)
    head = fitted.module.model.head
    module = ClassifierModule(head, splits.class_weights())
    return (
        replace(fitted, module=module),
        finetune.head_splits(splits, tuned, info["representation"]),
        info,
    )


def tracked_fit(splits: Splits, config: TrainConfig, settings, run_id: str, model=None) -> Fitted:
    """`fit` with per-epoch metrics logged to the MLflow run `run_id`."""
    from flywheel.training import tracking

    return fit(
        splits,
        config,
        settings.image_size,
        root_dir=_root(settings, config),
        callbacks=[tracking.EpochMetrics(run_id, settings.tracking_uri)],
        model=model,
    )


def _root(settings, config: TrainConfig) -> str:
    return config.root_dir or str(settings.home / "training")


def params(config: TrainConfig, settings, splits: Splits) -> dict:
    keep = (
        "arch",
        "width",
        "lr",
        "weight_decay",
        "batch_size",
        "max_epochs",
        "patience",
        "val_fraction",
        "seed",
        "compile",
    )
    return {
        **{k: v for k, v in asdict(config).items() if k in keep},
        "classes": json.dumps(splits.classes),
        "image_size": settings.image_size,
        "holdout_fraction": settings.holdout_fraction,
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_holdout": len(splits.holdout),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "snapshot_id": config.snapshot_id or "none",
        "feature_service": config.feature_service,
    }


def tags(config: TrainConfig) -> dict:
    out = {"snapshot_id": config.snapshot_id or "none", "feature_service": config.feature_service}
    if os.environ.get("FLYWHEEL_TRAINJOB"):  # set in the pods of a TrainJob (trainjob.py)
        out["trainjob"] = os.environ["FLYWHEEL_TRAINJOB"]
    return out


def _evaluate_only(fitted: Fitted, splits: Splits, run_id=None) -> TrainResult:
    acc = float("nan")
    if len(splits.holdout):
        pred = predict(fitted.module.model, splits.holdout.x)
        acc = float((pred == splits.holdout.y).float().mean())
    return _result(fitted, splits, run_id, None, None, acc, None)


def finalize(
    fitted: Fitted,
    splits: Splits,
    settings,
    config: TrainConfig,
    run_id: str,
    rep_info: dict | None = None,
) -> TrainResult:
    """Inside the active run: score the holdout, compare the champion, log, register."""
    import mlflow

    from flywheel.training import tracking

    model = fitted.module.model.float().cpu().eval()
    hold = splits.holdout
    pred = predict(model, hold.x)
    acc = float((pred == hold.y).float().mean())
    metrics = {"holdout_accuracy": acc, "epochs": fitted.epochs, "train_seconds": fitted.seconds}
    if fitted.val_accuracy is not None:
        metrics["val_accuracy_final"] = fitted.val_accuracy
    if fitted.samples_per_s:
        metrics["samples_per_s"] = fitted.samples_per_s
    champion_acc = None
    if config.compare_champion:
        champion_acc, champion_version = tracking.champion_accuracy(
            settings,
            hold.x,
            hold.y,
            splits.classes,
            item_ids=hold.item_ids,
            representation=(rep_info or {}).get("representation", "pixels"),
        )
        if champion_acc is not None:
            metrics["champion_holdout_accuracy"] = champion_acc
            mlflow.set_tag("champion_version_compared", champion_version)
    mlflow.log_metrics(metrics)
    mlflow.log_params({"precision": fitted.precision, "accelerator": fitted.accelerator})
    fig = tracking.confusion_figure(hold.y.numpy(), pred.numpy(), splits.classes)
    mlflow.log_figure(fig, "confusion_matrix.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    info = tracking.log_model(
        Probabilities(model).eval(),
        hold.x[:5].numpy(),
        splits.classes,
        {
            "arch": config.arch,
            "image_size": settings.image_size,
            "in_channels": config.in_channels,
            "snapshot_id": config.snapshot_id or "none",
            **(rep_info or {"representation": "pixels"}),
        },
        settings.model_name if config.register else None,
    )
    version = None
    if config.register:
        from flywheel.registry import set_alias

        version = str(info.registered_model_version)
        set_alias(settings, "challenger", version)
    tracking.log_cards(settings, config, splits, pred.numpy(), fitted, run_id, version)
    mlflow.set_tag(
        "mlflow.runName", tracking.run_label(version, len(splits.train) + len(splits.val))
    )
    uri = f"models:/{settings.model_name}/{version}" if version else info.model_uri
    return _result(fitted, splits, run_id, uri, version, acc, champion_acc)


def _result(fitted: Fitted, splits: Splits, run_id, uri, version, acc, champion_acc):
    return TrainResult(
        run_id,
        uri,
        version,
        acc,
        fitted.val_accuracy,
        champion_acc,
        len(splits.train),
        len(splits.val),
        len(splits.holdout),
        splits.classes,
        fitted.epochs,
        fitted.samples_per_s,
        fitted.seconds,
        rank(),
    )


# --- command line (argparse: the GPU image has no typer) -----------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flywheel.training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--snapshot", help="label snapshot parquet (features joined)")
    src.add_argument("--frame", help="parquet with item_id, label, pixels")
    src.add_argument("--synthetic", type=int, metavar="N", help="N random items (throughput)")
    p.add_argument("--arch", choices=ARCHS + HEADS)
    p.add_argument(
        "--mode",
        choices=["scratch", "head", "finetune"],
        help="default: FLYWHEEL_TRAIN_MODE (auto: head on embeddings, scratch on pixels)",
    )
    p.add_argument("--width", type=int)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--val-fraction", type=float, default=0.1, help="0: no validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, help="synthetic only (else the setting)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10, help="synthetic only")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--deterministic", action="store_true", help="reproducible kernels (slower)")
    p.add_argument("--warmup", type=int, default=10, help="steps before timing throughput")
    p.add_argument("--no-track", action="store_true", help="no MLflow at all")
    p.add_argument("--no-register", action="store_true")
    p.add_argument("--promote", action="store_true", help="then run the promotion rule")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--result", type=Path, help="write the TrainResult JSON here (rank 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = TrainConfig(
        arch=args.arch,
        mode=args.mode,
        width=args.width,
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        patience=args.patience,
        val_fraction=args.val_fraction,
        seed=args.seed,
        in_channels=args.channels,
        compile=args.compile,
        accelerator=args.accelerator,
        cpu_threads=args.threads,
        deterministic=args.deterministic,
        progress=args.progress,
        track=not args.no_track,
        register=not args.no_register,
        throughput_warmup=args.warmup,
    )
    try:
        if args.synthetic:
            if not args.no_track:
                raise InputError("--synthetic trains on random data: add --no-track")
            size = args.image_size or 8
            splits = synthetic(args.synthetic, size * size * args.channels, args.classes, args.seed)
            fitted = fit(splits, replace(config, arch=config.arch or "cnn"), size, root_dir=".")
            result = _evaluate_only(fitted, splits)
            result.extra["mlflow_imported"] = sys.modules.get("mlflow") is not None
            if torch.cuda.is_available():
                result.extra["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
                result.extra["gpu"] = torch.cuda.get_device_name()
        else:
            result = _train_from_files(args, config)
    except FlywheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if rank() == 0:
        text = json.dumps(asdict(result), default=str)
        print("TRAIN_RESULT " + text)
        if args.result:
            args.result.write_text(text)
    return 0


def _train_from_files(args, config: TrainConfig) -> TrainResult:
    from flywheel.settings import get_settings

    settings = get_settings()
    frame, snapshot_id = load_frame(settings, args.snapshot, args.frame)
    result = train(frame, settings, replace(config, snapshot_id=snapshot_id))
    if args.promote and rank() == 0 and result.version:
        from flywheel.registry import promote

        result.extra["promotion"] = asdict(promote(settings, result.version))
    return result


def load_frame(settings, snapshot: str | Path | None = None, frame: str | Path | None = None):
    """(training frame, snapshot id): features joined onto a label snapshot (via
    `flywheel.features.training_set`), or a ready frame with item_id, label, pixels."""
    if (snapshot is None) == (frame is None):
        raise InputError("give exactly one of --snapshot or --frame")
    data = read_frame(settings, snapshot or frame)
    sid = str(data["snapshot_id"].iloc[0]) if "snapshot_id" in data and len(data) else ""
    if snapshot is not None:
        from flywheel.features import training_set

        return training_set(data, settings), sid or Path(str(snapshot)).stem
    return data, sid
