"""`python -m flywheel.rehearsal` (`make rehearsal`): one turn of the cluster loop, on one box.

1. Render the chart (deploy/render.py, profile `dev`): its platform ConfigMap and Secrets
   are the only source of every pod's settings.
2. Start the cluster's datastores and servers locally, with the Secrets' credentials
   (flywheel.rehearsal.datastores): Postgres, Redis, the S3 server, MLflow (basic auth,
   artifacts in S3), Label Studio on Postgres.
3. Compile the pipelines (`flywheel loop compile`) with no FLYWHEEL_* variable set: the IR
   YAML is the file the cluster receives.
4. Seed what a person would have done: the demo collection (images and catalogue in S3,
   tasks in Label Studio) and some labels by the demo annotator, from a pod-like shell.
5. Start the model servers of the chart's InferenceService in cluster mode (no champion:
   not ready yet).
6. Run the turn from the IR (flywheel.rehearsal.pipeline), each task its own process with
   an empty home and only its pod's environment; the train step's TrainJob and the deploy
   step's InferenceService patch go through `RehearsalCluster`.
7. Check the end state: the new champion answers through the transformer; the selected
   items are queued in Label Studio. Print each step's time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from flywheel import names, objectstore
from flywheel.errors import FlywheelError, ServiceError
from flywheel.rehearsal import cluster as rcluster
from flywheel.rehearsal import pipeline as rpipeline
from flywheel.rehearsal.datastores import Datastores
from flywheel.rehearsal.pods import REPO, Box, free_port, from_rendered

PROFILE = "dev"
PIPELINE_NAMESPACE = "kubeflow"
N_ITEMS = 200  # demo digits in the collection
N_LABELS = 100  # labelled by the demo annotator before the turn


class RehearsalFailed(FlywheelError):
    """The rehearsal did not reach its end state; the message says where."""


class Clock:
    def __init__(self, console):
        self.console, self.steps = console, []

    @contextmanager
    def step(self, name: str):
        began = time.monotonic()
        self.console.print(f"[bold]-> {name}[/]")
        yield
        seconds = time.monotonic() - began
        self.steps.append((name, seconds))
        self.console.print(f"   {name}: {seconds:.1f} s")

    def table(self):
        from rich.table import Table

        table = Table(title="rehearsal: step times")
        table.add_column("step")
        table.add_column("seconds", justify="right")
        for name, seconds in self.steps:
            table.add_row(name, f"{seconds:.1f}")
        total = sum(s for name, s in self.steps if not name.startswith("task "))  # in the turn
        table.add_row("[bold]total[/]", f"[bold]{total:.1f}[/]")
        return table


def _platform_container() -> dict:
    """A pod that takes the platform ConfigMap and Secret, as every flywheel pod does."""
    return {
        "envFrom": [
            {"configMapRef": {"name": names.CONFIG_MAP}},
            {"secretRef": {"name": names.SECRET}},
        ]
    }


def _host_of(url: str) -> str:
    from urllib.parse import urlparse

    return (urlparse(url).hostname or "").split(".")[0]


def rehearse(work: Path, console, n_items: int = N_ITEMS, n_labels: int = N_LABELS) -> dict:
    from flywheel.deploy.render import NAMESPACE, render

    clock = Clock(console)
    work.mkdir(parents=True, exist_ok=True)
    stores = Datastores(work)
    try:
        with clock.step("render the chart"):
            rendered = render(PROFILE)
            platform = {}
            for obj in rendered.of_kind("ConfigMap"):
                if obj["metadata"]["name"] == names.CONFIG_MAP:
                    platform = obj.get("data") or {}
            if "FLYWHEEL_STATE_URI" not in platform:
                raise RehearsalFailed(
                    f"the chart's ConfigMap {names.CONFIG_MAP} has no FLYWHEEL_STATE_URI: "
                    "pipeline steps would hand state through their own disks"
                )
            s3_service = _host_of(platform["AWS_ENDPOINT_URL"])
            ports = {
                "postgres": free_port(),
                "redis": free_port(),
                s3_service: free_port(),
                "mlflow": free_port(),
                "label-studio": free_port(),
                "predictor": free_port(),
                "transformer": free_port(),
                "trigger": free_port(),  # named in webhooks; the rehearsal runs the turn itself
            }
            box = from_rendered(rendered, work, NAMESPACE, PIPELINE_NAMESPACE, ports)
            box.overrides.update(_deviations(platform, work, console))
            box.save()
            from flywheel.deploy import env as chart_env

            def deployment_env(name: str) -> dict:
                dep = rendered.get("Deployment", name)
                container = dep["spec"]["template"]["spec"]["containers"][0]
                return chart_env.container_env(rendered, container, NAMESPACE)

            def job_container(name: str) -> dict:
                job = rendered.get("Job", name)
                return job["spec"]["template"]["spec"]["containers"][0]

            ls_env = deployment_env("label-studio")
            mlflow_env = deployment_env("mlflow")
            db_init = job_container("db-init")
            db_init_env = box.container_env(db_init)
            redis_password = chart_env.secret(rendered, "flywheel-redis", NAMESPACE)["password"]
            bucket = platform["FLYWHEEL_S3_BUCKET"]
        scratch = work / "servers"
        with clock.step("postgres (+ the chart's db-init Job: one role per service)"):
            stores.postgres(ports["postgres"], db_init_env["PGUSER"], db_init_env["PGPASSWORD"])
            local_pg = {"PGHOST": "127.0.0.1", "PGPORT": str(ports["postgres"])}
            _check(  # the Job's own script, as rendered (it runs in the Postgres image)
                ["sh", "-ec", db_init["command"][-1]],
                {**os.environ, **db_init_env, **local_pg},
                work / "logs" / "db-init.log",
            )
        with clock.step("redis"):
            stores.redis(ports["redis"], redis_password)
        with clock.step("s3"):
            stores.s3(ports[s3_service])
        operator_env = box.pod_env(
            box.container_env(_platform_container()), box.scratch("operator")
        )
        operator = _settings_from(operator_env)
        objectstore.ensure_bucket(operator, f"s3://{bucket}")
        pg = (  # MLflow's own role, made by db-init
            f"postgresql+psycopg://{mlflow_env['PGUSER']}:{mlflow_env['PGPASSWORD']}"
            f"@127.0.0.1:{ports['postgres']}"
        )
        with clock.step("mlflow (basic auth, artifacts in S3) + label studio (postgres)"):
            env = {k: box.localize(v, scratch) for k, v in mlflow_env.items()}
            mlflow_up = stores.mlflow(ports["mlflow"], env, pg, bucket)
            env = {k: box.localize(v, scratch) for k, v in ls_env.items()}
            env.update(POSTGRE_HOST="127.0.0.1", POSTGRE_PORT=str(ports["postgres"]))
            # the cluster's Services are loopback here: let webhooks reach them
            banned = env.get("USER_ADDITIONAL_BANNED_SUBNETS", "").split(",")
            env["USER_ADDITIONAL_BANNED_SUBNETS"] = ",".join(
                b for b in banned if b and b not in ("127.0.0.0/8", "::1/128")
            )
            ls_up = stores.label_studio(ports["label-studio"], env, _ls_venv())
            mlflow_up()
            ls_up()
        with clock.step("the chart's mlflow-users Job (one MLflow identity per workload)"):
            users = job_container("mlflow-users")
            _check(
                [sys.executable, *users["command"][1:]],
                box.pod_env(box.container_env(users), box.scratch("mlflow-users")),
                work / "logs" / "mlflow-users.log",
                cwd=REPO,
            )

        with clock.step("compile the pipelines (IR YAML)"):
            ir_dir = work / "ir"
            clean = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
            _check(
                [sys.executable, "-m", "flywheel.cli", "loop", "compile", "--out", str(ir_dir)],
                clean,
                work / "logs" / "compile.log",
                cwd=REPO,
            )
            ir_path = ir_dir / "flywheel-turn.yaml"
            text = ir_path.read_text()
            for bad in ("FLYWHEEL_MODE=local", "127.0.0.1", "localhost"):
                if bad in text:
                    raise RehearsalFailed(f"the compiled {ir_path} carries {bad!r}")

        with clock.step(f"seed: {n_items} items to S3 + Label Studio, {n_labels} labels"):
            flywheel = [sys.executable, "-m", "flywheel.cli"]
            log = work / "logs" / "seed.log"
            home = Path(operator_env["HOME"])
            _check(
                [*flywheel, "collection", "init", "--limit", str(n_items)], operator_env, log, home
            )
            _check(
                [*flywheel, "labels", "annotate-demo", "-n", str(n_labels)], operator_env, log, home
            )

        with clock.step("model servers (cluster mode, no champion yet)"):
            isvc = box.rendered_object("InferenceService", names.INFERENCE_SERVICE)
            if isvc is None:
                raise RehearsalFailed(
                    f"the chart renders no InferenceService {names.INFERENCE_SERVICE}"
                )
            api = rcluster.RehearsalCluster(work=work)
            isvc = dict(isvc, metadata={**isvc["metadata"], "generation": 1})
            api._save(rcluster.roll(box, isvc, timeout_s=120, live_only=True))

        run_id = time.strftime("%Y%m%d-%H%M%S")
        root_uri = f"s3://{bucket}/pipeline-root/flywheel-turn-{run_id}"

        def on_task(result):
            clock.steps.append((f"task {result.name}", result.seconds))
            console.print(f"   task {result.name}: {result.seconds:.1f} s {result.parameters}")

        with clock.step("the turn, task by task from the IR"):
            outputs, results = rpipeline.run_pipeline(
                rpipeline.load_ir(ir_path), box, root_uri, operator, on_task=on_task
            )
        console.print(f"turn outputs: {outputs}")

        with clock.step("check: champion through the transformer, queue in Label Studio"):
            checks = _check_end(operator, box, outputs, results)
        console.print(checks)
        console.print(clock.table())
        return {"outputs": outputs, "checks": checks, "steps": clock.steps}
    finally:
        if (work / "box.json").exists():
            rcluster.stop_serving(Box.load(work))
        stores.stop()


def _duckdb_reads_s3() -> bool:
    """Feast's DuckDB offline store reads s3:// through DuckDB's httpfs extension, which
    the platform image installs at build time (DuckDB downloads it); a box without it and
    without network cannot."""
    import duckdb

    try:
        duckdb.connect().execute("LOAD httpfs")
        return True
    except duckdb.Error:
        return False


def _deviations(platform: dict, work: Path, console) -> dict[str, str]:
    out = {}
    offline = platform.get("FLYWHEEL_FEAST_OFFLINE_URI", "")
    if offline.startswith("s3://") and not _duckdb_reads_s3():
        shared = work / "volumes" / "feast" / "items.parquet"
        shared.parent.mkdir(parents=True, exist_ok=True)
        out["FLYWHEEL_FEAST_OFFLINE_URI"] = str(shared)
        console.print(
            "[yellow]deviation:[/] DuckDB's httpfs extension is not installed here (the image "
            "installs it; this box cannot download it), so Feast's offline store is a shared "
            f"volume ({shared}) instead of {offline}. Snapshots, the training set, the "
            "catalogue and item images still cross pods through S3."
        )
    return out


def _settings_from(env: dict):
    """The Settings a pod with this environment builds (here, in this process)."""
    import typing

    from flywheel.settings import Settings, env_name, load

    values = {}
    for field, info in Settings.model_fields.items():
        if env_name(field) in env:
            value = env[env_name(field)]
            origin = typing.get_origin(info.annotation)
            values[field] = json.loads(value) if origin in (list, dict) else value
    # the AWS chain a pod reads from its environment, given explicitly here
    if "AWS_ACCESS_KEY_ID" in env and "s3_access_key" not in values:
        values["s3_access_key"] = env["AWS_ACCESS_KEY_ID"]
        values["s3_secret_key"] = env.get("AWS_SECRET_ACCESS_KEY")
    return load(**values)


def _ls_venv() -> Path:
    venv = Path(os.environ.get("FLYWHEEL_LABEL_STUDIO_VENV", REPO / ".venv-labelstudio"))
    if not (venv / "bin" / "label-studio").exists():
        raise RehearsalFailed(f"no Label Studio server in {venv}: run `make setup`")
    return venv


def _check(command: list[str], env: dict, log: Path, cwd: Path | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.run(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RehearsalFailed(f"`{' '.join(command[2:])}` failed ({proc.returncode}):\n{tail}")


def _check_end(settings, box: Box, outputs: dict, results) -> dict:
    import httpx

    from flywheel.labelling import client as lsc

    version = str(outputs.get("model_version"))
    promoted = outputs.get("promoted")
    url = f"http://127.0.0.1:{box.ports['transformer']}/v1/models/{settings.model_name}:predict"
    catalogue_ids = _item_ids(settings)
    answer = httpx.post(url, json={"instances": catalogue_ids[:3]}, timeout=30)
    if answer.status_code != 200:
        raise RehearsalFailed(
            f"the transformer at {url} answered {answer.status_code}: {answer.text}"
        )
    body = answer.json()
    served = str(body.get("model_version", ""))
    if promoted and served != version:
        raise RehearsalFailed(
            f"the transformer serves version {served!r}, not the new champion {version}"
        )
    tasks = lsc.project_tasks(settings)
    queued = [
        t for t in tasks if (t.get("data") or {}).get("priority", 0) and not t.get("annotations")
    ]
    with_guess = [t for t in queued if t.get("predictions") or t.get("total_predictions")]
    selected = [
        r
        for r in results
        if r.name.endswith("select-for-labelling") or "select-for-labelling" in r.name
    ]
    n_selected = int(selected[-1].parameters.get("Output", 0)) if selected else 0
    if not n_selected or len(queued) < n_selected:
        raise RehearsalFailed(
            f"Label Studio has {len(queued)} queued unlabelled tasks; the select step said "
            f"{n_selected}"
        )
    return {
        "champion_served": served,
        "predictions": body.get("predictions", [])[:3],
        "queued_in_label_studio": len(queued),
        "queued_with_model_guess": len(with_guess),
        "selected": n_selected,
    }


def _item_ids(settings) -> list[str]:
    from flywheel.labelling.collection import read_catalogue

    return [str(i) for i in read_catalogue(settings)["item_id"]]


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the rehearsal (default: a temp dir)")
    parser.add_argument("--items", type=int, default=N_ITEMS)
    parser.add_argument("--labels", type=int, default=N_LABELS)
    args = parser.parse_args(argv)
    console = Console()
    work = args.work or Path(tempfile.mkdtemp(prefix="flywheel-rehearsal-"))
    work = work.resolve()
    try:
        rehearse(work, console, args.items, args.labels)
    except (FlywheelError, ServiceError) as exc:
        console.print(f"[red]rehearsal failed:[/] {exc}\n(logs under {work})")
        return 1
    console.print(f"[green]rehearsal passed[/] (logs under {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
