"""Compile, run locally, and submit the pipelines (the KFP side of flywheel.engines).

- `compile_all(out_dir)`: IR YAML for the cluster. Every task reads the platform ConfigMap
  and Secret by reference; nothing of this machine's settings goes in.
- `run_local(settings, ...)` / `run_turn_local`: executes a pipeline with
  `kfp.local.SubprocessRunner` against the local services (settings through
  `Settings.to_env`), caching under `<home>/kfp/cache`.
- `KfpSubmitter`: runs on a Kubeflow Pipelines endpoint with `kfp.Client` (the trigger's
  cluster action submits through it, one turn at a time); `submit(settings, ...)` is the
  CLI's compile-and-submit, also as a recurring run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.settings import Settings


class PipelineFailed(FlywheelError):
    """A pipeline step failed; the message names the step and the cause."""


def compile_all(out_dir: Path) -> dict[str, Path]:
    from kfp import compiler

    from pipelines.flywheel import build

    out_dir.mkdir(parents=True, exist_ok=True)
    turn, sweep = build(cluster=True)
    paths = {}
    for name, func in (("flywheel-turn", turn), ("flywheel-sweep", sweep)):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(func, package_path=str(path))
        paths[name] = path
    return paths


def run_local(
    settings: Settings,
    pipeline: str = "turn",
    params: dict | list | None = None,
    k: int | None = None,
    strategy: str | None = None,
    cache: bool = True,
) -> dict:
    """Run one pipeline locally; return the pipeline's outputs."""
    root = settings.home / "kfp"
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    os.environ["TMPDIR"] = str(tmp)  # the local runner leaves temp dirs behind
    os.environ.update(settings.to_env())  # the steps are subprocesses: same settings
    try:
        return _run(
            settings,
            func_name=pipeline,
            root=root,
            cache=cache,
            params=params,
            k=k,
            strategy=strategy,
        )
    finally:  # leave this process's environment as it was
        os.environ.clear()
        os.environ.update(saved)


def run_turn_local(settings: Settings, params, k: int, strategy: str) -> dict:
    """The local pipeline as a turn runner (flywheel.loop.turn)."""
    return run_local(settings, "turn", params=params, k=k, strategy=strategy)


def _run(settings, func_name, root, cache, params, k, strategy) -> dict:
    """Run with the runner's streamed task logs going to `<home>/logs/kfp-local.log`."""
    log = settings.log_dir / "kfp-local.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out, contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        start = out.tell()
        try:
            return _run_logged(settings, func_name, root, cache, params, k, strategy)
        except PipelineFailed as exc:
            out.flush()
            raise PipelineFailed(f"{exc}\n{_error_lines(log, start)}(full log: {log})") from None


def _error_lines(log: Path, start: int, keep: int = 6) -> str:
    """The last exception lines the failed task printed."""
    with log.open() as fh:
        fh.seek(start)
        lines = [ln.strip() for ln in fh if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
    return "".join(f"  {ln[:300]}\n" for ln in errors[-keep:])


def _run_logged(settings, func_name, root, cache, params, k, strategy) -> dict:
    from kfp import local

    from pipelines.flywheel import build

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / "outputs"),
        enable_caching=cache,
        cache_root=str(root / "cache"),
        raise_on_error=True,
    )
    turn, sweep = build(cluster=False)
    func = {"turn": turn, "sweep": sweep}.get(func_name)
    kwargs = {
        "labels_per_turn": settings.labels_per_turn if k is None else k,
        "strategy": strategy or settings.acquisition,
    }
    if func_name == "drift":
        from pipelines.drift import build_drift

        func, kwargs = build_drift(cluster=False), {}
    elif params and func_name == "turn":
        kwargs["params_json"] = json.dumps(params)
    elif params:
        kwargs["trials"] = [json.dumps(p) for p in params]
    try:
        task = func(**kwargs)
    except RuntimeError as exc:  # kfp.local raises RuntimeError naming the failed task
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the runner colours task names
        raise PipelineFailed(f"pipeline {func.name} failed: {message}") from None
    return dict(task.outputs)


def submit(
    settings: Settings,
    pipeline: str = "turn",
    schedule: str | None = None,
    upload_only: bool = False,
    out_dir: Path = Path("build/pipelines"),
) -> str:
    """Compile and submit to Kubeflow Pipelines; return the run (or recurring run) id."""
    import kfp

    if not settings.kfp_host:
        raise FlywheelError("no Kubeflow Pipelines endpoint: set FLYWHEEL_KFP_HOST")
    paths = compile_all(out_dir)
    if pipeline == "drift":  # its own small pipeline, scheduled apart from the turns
        from pipelines.drift import compile_drift

        paths["flywheel-drift"] = compile_drift(out_dir)
    name = f"flywheel-{pipeline}"
    client = kfp.Client(host=settings.kfp_host)
    if upload_only:
        for pname, path in paths.items():
            try:
                client.upload_pipeline(str(path), pipeline_name=pname)
            except Exception:  # already there: add a version instead
                pid = client.get_pipeline_id(pname)
                client.upload_pipeline_version(
                    str(path), pipeline_version_name=f"{pname}-{os.getpid()}", pipeline_id=pid
                )
        return "uploaded"
    experiment = client.create_experiment(settings.kfp_experiment)
    if schedule:
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=f"{name}-recurring",
            cron_expression=schedule,
            pipeline_package_path=str(paths[name]),
            max_concurrency=1,
        )
        return job.recurring_run_id
    run = client.create_run_from_pipeline_package(
        str(paths[name]),
        arguments={},
        experiment_name=settings.kfp_experiment,
        run_name=f"{name}",
    )
    return run.run_id


ACTIVE = {"PENDING", "RUNNING", "PAUSED", "CANCELING"}


class KfpSubmitter:
    """Runs on Kubeflow Pipelines (FLYWHEEL_KFP_HOST), in the FLYWHEEL_KFP_EXPERIMENT."""

    def __init__(self, settings: Settings, client=None):
        if not settings.kfp_host and client is None:
            raise FlywheelError("no Kubeflow Pipelines endpoint: set FLYWHEEL_KFP_HOST")
        self.settings = settings
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import kfp

            self._client = kfp.Client(host=self.settings.kfp_host)
        return self._client

    def _experiment_id(self) -> str:
        return self.client.create_experiment(self.settings.kfp_experiment).experiment_id

    def active_runs(self) -> list[str]:
        """Ids of the experiment's runs that have not finished."""
        listed = self.client.list_runs(
            experiment_id=self._experiment_id(), page_size=100, sort_by="created_at desc"
        )
        return [r.run_id for r in (listed.runs or []) if str(r.state) in ACTIVE]

    def submit(self, package: Path, run_name: str) -> str:
        run = self.client.create_run_from_pipeline_package(
            str(package),
            arguments={},
            experiment_name=self.settings.kfp_experiment,
            run_name=run_name,
        )
        return run.run_id
