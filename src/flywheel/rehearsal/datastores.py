"""The cluster's datastores and servers, started on this box for a rehearsal.

Each runs as its own process on a free loopback port, with the credentials of the rendered
chart's Secrets (so the pods' environment works unchanged), and is stopped at the end:

    postgres      Debian's PostgreSQL, a fresh cluster (initdb) in the rehearsal folder,
                  run as the `postgres` user when we are root (CI); databases for the MLflow
                  backend store and its basic-auth users, Label Studio, the Feast registry
    redis         Debian's redis-server with the chart's password (Feast online store)
    s3            moto's S3 server (flywheel.rehearsal.s3server)
    mlflow        `mlflow server --app-name basic-auth`, backend store in Postgres,
                  artifacts in S3 (--artifacts-destination s3://...)
    label-studio  Label Studio on Postgres (DJANGO_DB=default), in its own venv
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from flywheel.errors import ServiceError

PG_DATABASES = ("mlflow", "mlflow_auth", "labelstudio", "feast")


def _pg_bin() -> Path:
    base = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in base.glob("*") if (p / "bin" / "initdb").exists()), key=lambda p: int(p.name)
    )
    if not versions:
        raise ServiceError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "apt-get install postgresql"
        )
    return versions[-1] / "bin"


def _as_postgres() -> list[str]:
    """Postgres refuses to run as root: in CI (root) run it as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    pwd.getpwnam("postgres")  # KeyError when the Debian package is missing
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


@dataclass
class Datastores:
    work: Path
    processes: list[Process] = field(default_factory=list)
    stops: list = field(default_factory=list)  # extra stop callables (pg_ctl stop)

    def log(self, name: str) -> Path:
        path = self.work / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def spawn(self, name: str, command: list[str], env: dict, cwd: Path | None = None) -> Process:
        log = self.log(name)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def wait_http(self, proc: Process, url: str, timeout_s: float, ok=(200,)) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise ServiceError(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log}")
            try:
                if httpx.get(url, timeout=5).status_code in ok:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise ServiceError(f"{proc.name} did not answer {url} in {timeout_s:.0f} s; see {proc.log}")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        for stop in reversed(self.stops):
            stop()

    # --- postgres -------------------------------------------------------------------------
    def postgres(self, port: int, user: str, password: str) -> None:
        """A fresh PostgreSQL cluster with superuser `user`/`password` and PG_DATABASES."""
        bindir, wrap = _pg_bin(), _as_postgres()
        data, run = self.work / "postgres" / "data", self.work / "postgres" / "run"
        run.mkdir(parents=True, exist_ok=True)
        pwfile = self.work / "postgres" / "pwfile"
        pwfile.write_text(password + "\n")
        if wrap:
            shutil.chown(self.work / "postgres", "postgres")
            for p in (run, pwfile):
                shutil.chown(p, "postgres")
            os.chmod(self.work, 0o755)
        log = self.log("postgres")
        if wrap:
            log.touch()
            shutil.chown(log, "postgres")
        subprocess.run(
            [*wrap, str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}"]
            + ["-A", "scram-sha-256", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        options = f"-p {port} -h 127.0.0.1 -k {run} -c fsync=off -c full_page_writes=off"
        subprocess.run(
            [*wrap, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
            + ["-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
        )
        self.stops.append(
            lambda: subprocess.run(
                [*wrap, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                capture_output=True,
            )
        )
        import psycopg

        conninfo = f"host=127.0.0.1 port={port} user={user} password={password} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for db in PG_DATABASES:
                conn.execute(f'CREATE DATABASE "{db}"')

    # --- redis ----------------------------------------------------------------------------
    def redis(self, port: int, password: str) -> None:
        folder = self.work / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "redis.conf"
        conf.write_text(
            f'bind 127.0.0.1\nport {port}\nrequirepass {password}\nsave ""\n'
            f"appendonly no\ndir {folder}\n"
        )
        conf.chmod(0o600)
        proc = self.spawn("redis", ["redis-server", str(conf)], {"PATH": os.environ["PATH"]})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if proc.popen.poll() is not None:
                break
            time.sleep(0.2)
        raise ServiceError(f"redis did not start on {port}; see {proc.log}")

    # --- S3 -------------------------------------------------------------------------------
    def s3(self, port: int):
        from flywheel.rehearsal import s3server

        server = s3server.start(port, self.log("s3"))
        self.stops.append(server.stop)
        return server

    # --- MLflow ---------------------------------------------------------------------------
    def mlflow(self, port: int, env: dict, pg: str, bucket: str):
        """`env`: the MLflow pod's environment (admin user/password, S3 credentials and
        endpoint, flask secret), localized. `pg`: postgresql+psycopg://user:pw@host:port."""
        folder = self.work / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        ini = folder / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {pg}/mlflow_auth\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        ini.chmod(0o600)
        env = {
            **env,
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(folder),
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"{pg}/mlflow",
            "--artifacts-destination",
            f"s3://{bucket}/mlflow",
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        proc = self.spawn("mlflow", command, env, cwd=folder)
        return lambda: self.wait_http(proc, f"http://127.0.0.1:{port}/health", 300)

    # --- Label Studio ---------------------------------------------------------------------
    def label_studio(self, port: int, env: dict, venv: Path):
        """`env`: the Label Studio pod's environment (Postgres, admin user and token),
        localized."""
        folder = self.work / "label-studio"
        folder.mkdir(parents=True, exist_ok=True)
        env = {
            **env,
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(folder),
            "LABEL_STUDIO_BASE_DATA_DIR": str(folder),
        }
        for unprefixed in ("USERNAME", "PASSWORD", "HOST", "PORT"):
            env.pop(unprefixed, None)
        command = [
            str(venv / "bin" / "label-studio"),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "-p",
            str(port),
            "--data-dir",
            str(folder),
        ]
        proc = self.spawn("label-studio", command, env, cwd=folder)
        return lambda: self.wait_http(proc, f"http://127.0.0.1:{port}/health", 400)
