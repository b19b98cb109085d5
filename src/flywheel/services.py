"""Local services on the dev box, supervised by supervisord.

Each service is a few declarative lines (`Service`): the command, its port, a health
path, extra environment. `up` writes one supervisord config under `<home>/run/`, starts
supervisord if needed, refuses ports that are already taken, starts what is not running
and waits on each health endpoint; `down` stops everything and supervisord itself.
All data, logs and pid files stay under `<home>/` and survive `down`/`up`.

Faults: a service that dies unexpectedly (a crash, `kill -9`) is restarted by supervisord
itself (`autorestart=unexpected`); one that dies again within `FLYWHEEL_SERVICE_START_S`
seconds is retried with a growing delay (1 s, 2 s, ...) up to `FLYWHEEL_SERVICE_START_RETRIES`
times and then left `fatal` (a crash loop), which `status` reports with the log tail.
`status` also shows how often each service was restarted and how it last exited (read from
supervisord's own log). Each service runs under `flywheel.supervised`, which marks its whole
process tree so that no process of a killed run keeps a port: the launcher clears them before
each (re)start, and `up` clears them before it checks a port.

On a cluster the same services are Kubernetes workloads (see charts/); none of this runs.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flywheel import supervised
from flywheel.errors import ServiceError
from flywheel.private import ensure_home, write_private
from flywheel.settings import Settings, env_name

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Service:
    """One supervised process. `port_setting` names the setting that moves it."""

    name: str
    command: list[str]
    port: int
    port_setting: str
    health_path: str = "/health"
    env: dict[str, str] = field(default_factory=dict)
    ui_path: str = "/"
    description: str = ""
    prepare: Callable[[], None] | None = None  # run before each start (dirs, config files)
    optional: bool = False  # started only when named (`flywheel up --with NAME`)

    def url(self, settings: Settings) -> str:
        return settings.url(self.port)


def _mlflow(s: Settings) -> Service:
    data = s.data_dir / "mlflow"
    auth = _mlflow_auth(s, data)
    return Service(
        name="mlflow",
        description="MLflow tracking server and model registry",
        command=[
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{data / 'mlflow.db'}",
            "--artifacts-destination",
            str(data / "artifacts"),
            "--workers",
            "1",
            "--host",
            s.host,
            "--port",
            str(s.mlflow_port),
            *auth["args"],
        ],
        port=s.mlflow_port,
        port_setting="mlflow_port",
        env={
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **auth["env"],
        },
        prepare=auth["prepare"],
    )


MLFLOW_ADMIN = "flywheel-admin"


def mlflow_client_env(s: Settings) -> dict[str, str]:
    """MLFLOW_TRACKING_USERNAME/PASSWORD when the dev-box MLflow requires a login
    (FLYWHEEL_ALLOW_REMOTE=true), else nothing."""
    if not s.allow_remote or s.mode != "local":
        return {}
    return {
        "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN,
        "MLFLOW_TRACKING_PASSWORD": s.secret("mlflow_admin_password"),
    }


def _mlflow_auth(s: Settings, data: Path) -> dict:
    """MLflow's basic-auth app for a dev box opened beyond loopback; nothing otherwise."""

    def prepare_plain() -> None:
        data.mkdir(parents=True, exist_ok=True)

    if not (s.allow_remote and s.mode == "local"):
        return {"args": [], "env": {}, "prepare": prepare_plain}
    from flywheel.private import write_private

    ini = s.run_dir / "mlflow_auth.ini"

    def prepare() -> None:
        prepare_plain()
        write_private(
            ini,
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{data / 'basic_auth.db'}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = false\n",
        )

    return {
        "args": ["--app-name", "basic-auth"],
        "env": {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": s.secret("mlflow_admin_password"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": s.secret("mlflow_flask_secret_key"),  # CSRF
        },
        "prepare": prepare,
    }


def _label_studio(s: Settings) -> Service:
    data = s.data_dir / "label-studio"
    return Service(
        name="label-studio",
        description="Label Studio (annotation UI and API)",
        command=[
            str(s.label_studio_venv / "bin" / "label-studio"),
            "start",
            "--no-browser",
            "--internal-host",
            s.host,
            "-p",
            str(s.label_studio_port),
            "--data-dir",
            str(data),
            "-db",
            str(data / "label_studio.sqlite3"),
        ],
        port=s.label_studio_port,
        port_setting="label_studio_port",
        env={
            "HOME": str(data),
            "LABEL_STUDIO_USERNAME": s.label_studio_username,
            "LABEL_STUDIO_PASSWORD": s.ls_password,
            "LABEL_STUDIO_USER_TOKEN": s.ls_token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(s.items_dir),  # images only
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",  # accounts by invite only
            "LABEL_STUDIO_ALLOWED_HOSTS": f"{s.host},localhost,127.0.0.1",
            # Webhooks to the loopback trigger service: on the dev box only loopback is
            # allowed; every other private range stays banned.
            "USE_DEFAULT_BANNED_SUBNETS": "false",
            "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(PRIVATE_NON_LOOPBACK),
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
        },
        prepare=lambda: (data.mkdir(parents=True, exist_ok=True), s.items_dir.mkdir(exist_ok=True)),
    )


PRIVATE_NON_LOOPBACK = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "fc00::/7",
    "fe80::/10",
]

# Later issues add their services here: a function Settings -> Service, one line each.
REGISTRY: list[Callable[[Settings], Service]] = [_mlflow, _label_studio]


def register(factory: Callable[[Settings], Service]) -> Callable[[Settings], Service]:
    """Decorator for modules that add a dev-box service (feature server, model servers...)."""
    if factory not in REGISTRY:
        REGISTRY.append(factory)
    return factory


def all_services(settings: Settings) -> list[Service]:
    _load_plugins()
    return [factory(settings) for factory in REGISTRY]


def _load_plugins() -> None:
    # Modules that register services; imported lazily so `flywheel status` stays fast.
    import importlib

    for module in PLUGINS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # that module is not there yet
            if not (exc.name and module.startswith(exc.name)):
                raise


PLUGINS: list[str] = [
    "flywheel.features.service",
    "flywheel.labelling.service",
    "flywheel.serving.service",
    "flywheel.monitoring.service",
]


def select(settings: Settings, names: Iterable[str] = ()) -> list[Service]:
    services = all_services(settings)
    names = list(names)
    if not names:
        return [s for s in services if not s.optional]
    known = {s.name: s for s in services}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ServiceError(
            f"unknown service {', '.join(unknown)}; known services: {', '.join(known)}"
        )
    return [known[n] for n in names]


# --- supervisord ---------------------------------------------------------------------------


class Supervisor:
    """A thin driver for one supervisord instance rooted at `<home>/run`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = settings.run_dir
        self.conf = self.run_dir / "supervisord.conf"
        self.sock = self.run_dir / "supervisor.sock"

    # config ---------------------------------------------------------------------------
    def render(self, services: list[Service]) -> str:
        lines = [
            "; generated by `flywheel up`; edit settings (.env), not this file",
            "[unix_http_server]",
            f"file={self.sock}",
            "chmod=0700",
            "",
            "[supervisord]",
            f"logfile={self.settings.log_dir / 'supervisord.log'}",
            f"pidfile={self.run_dir / 'supervisord.pid'}",
            "umask=077",  # every service's files: owner only
            f"directory={Path.cwd()}",
            "logfile_maxbytes=5MB",
            "logfile_backups=1",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{self.sock}",
            "",
        ]
        for svc in services:
            from flywheel.registry.promotion import client_env

            marked = {**client_env(self.settings), **svc.env, supervised.MARK: self.mark(svc.name)}
            env = ",".join(f"{k}={_quote(v)}" for k, v in sorted(marked.items()))
            lines += [
                f"[program:{svc.name}]",
                "command="
                + shlex.join([sys.executable, "-m", "flywheel.supervised", "--", *svc.command]),
                "autostart=false",
                "autorestart=unexpected",
                f"startsecs={self.settings.service_start_s:g}",
                f"startretries={self.settings.service_start_retries}",
                "stopasgroup=true",
                "killasgroup=true",
                "stopwaitsecs=20",
                "redirect_stderr=true",
                f"stdout_logfile={self.log_file(svc.name)}",
                "stdout_logfile_maxbytes=20MB",
                "stdout_logfile_backups=1",
            ]
            lines.append(f"environment={env}")
            lines.append("")
        return "\n".join(lines)

    def log_file(self, name: str) -> Path:
        return self.settings.log_dir / f"{name}.log"

    def mark(self, name: str) -> str:
        """The marker every process of service `name` carries (see flywheel.supervised)."""
        return supervised.mark(self.run_dir, name)

    def exits(self, name: str) -> tuple[int, str | None]:
        """(unexpected exits, the last exit) of `name` since supervisord last started,
        read from supervisord's log: each unexpected exit is followed by a restart."""
        path = self.settings.log_dir / "supervisord.log"
        if not path.exists():
            return 0, None
        crashes, last = 0, None
        prefix = f"exited: {name} ("
        for line in path.read_text(errors="replace").splitlines():
            if "supervisord started with pid" in line:
                crashes, last = 0, None
            elif prefix in line:
                what = line.split(prefix, 1)[1].rstrip(")")
                last = f"{line[:19]} {what}"
                crashes += "not expected" in what
        return crashes, last

    # process ----------------------------------------------------------------------------
    def rpc(self):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        if not self.sock.exists():
            return False
        try:
            return self.rpc().getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def ensure(self, services: list[Service]) -> None:
        """Write the config and make supervisord run it (starting no program)."""
        ensure_home(self.settings.home)
        for d in (self.run_dir, self.settings.log_dir, self.settings.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        text = self.render(services)
        changed = not self.conf.exists() or self.conf.read_text() != text
        if changed:
            write_private(self.conf, text)  # it holds the Label Studio token: 0600, atomic
        if not self.running():
            env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
            env.update(mlflow_client_env(self.settings))
            subprocess.run(
                [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
                env=env,
                check=True,
                cwd=Path.cwd(),
            )
            deadline = time.monotonic() + 15
            while not self.running():
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"supervisord did not start; see {self.settings.log_dir}/supervisord.log"
                    )
                time.sleep(0.1)
        elif changed:
            self._update()

    def _update(self) -> None:
        """Apply a changed config like `supervisorctl update` does."""
        rpc = self.rpc()
        added, changed, removed = rpc.reloadConfig()[0]
        for name in changed + removed:
            try:
                rpc.stopProcessGroup(name)
            except xmlrpc.client.Fault:
                pass
            rpc.removeProcessGroup(name)
        for name in changed + added:
            rpc.addProcessGroup(name)

    def info(self, name: str) -> dict | None:
        if not self.running():
            return None
        try:
            return self.rpc().getProcessInfo(name)
        except xmlrpc.client.Fault:
            return None

    def shutdown(self) -> None:
        if not self.running():
            return
        rpc = self.rpc()
        rpc.stopAllProcesses(True)
        pidfile = self.run_dir / "supervisord.pid"
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        rpc.shutdown()
        deadline = time.monotonic() + 30
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


# Label Studio reads the first four; the marker of a service that runs `up` itself (a turn
# started by the trigger) must not reach supervisord and so every other service.
SCRUBBED_ENV = {"USERNAME", "PASSWORD", "HOST", "PORT", supervised.MARK}


def _quote(value: str) -> str:
    """A value for supervisord's `environment=` line (shlex rules, %% for %)."""
    value = value.replace("%", "%%")
    if '"' in value and "'" not in value:  # JSON values such as label_classes
        return f"'{value}'"
    return f'"{value}"'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- health and ports ------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except Exception:  # noqa: BLE001 - any failure means "not healthy yet"
        return False


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log yet)"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64_000))
        data = fh.read().decode(errors="replace")
    return "\n".join(data.splitlines()[-lines:])


# --- the verbs ------------------------------------------------------------------------------


@dataclass
class Status:
    name: str
    state: str  # running | starting | unhealthy | stopped | exited | fatal
    pid: int | None
    port: int
    url: str
    description: str
    restarts: int = 0  # unexpected exits (each followed by a restart) since supervisord started
    last_exit: str | None = None  # "YYYY-MM-DD HH:MM:SS terminated by SIGKILL; not expected"
    log_tail: str | None = None  # the end of its log when it is in a crash loop (fatal)


def status(settings: Settings, names: Iterable[str] = ()) -> list[Status]:
    sup = Supervisor(settings)
    out = []
    for svc in select(settings, names):
        info = sup.info(svc.name)
        state, pid = "stopped", None
        if info:
            state = info["statename"].lower()
            pid = info["pid"] or None
            if state == "running" and not healthy(svc.url(settings) + svc.health_path):
                state = "unhealthy"
        restarts, last_exit = sup.exits(svc.name)
        out.append(
            Status(
                svc.name,
                state,
                pid,
                svc.port,
                svc.url(settings) + svc.ui_path,
                svc.description,
                restarts,
                last_exit,
                tail(sup.log_file(svc.name)) if state in ("fatal", "backoff") else None,
            )
        )
    return out


def clear_orphans(settings: Settings, svc: Service) -> list[int]:
    """End the processes left by an earlier run of `svc` (found by their marker), unless the
    service is running under supervisord now. Returns the pids ended."""
    sup = Supervisor(settings)
    info = sup.info(svc.name)
    if info and info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
        return []
    return supervised.clear(sup.mark(svc.name))


def up(
    settings: Settings,
    names: Iterable[str] = (),
    on_wait: Callable[[Service, float], None] | None = None,
) -> list[Service]:
    """Start what is not running and wait until each answers its health check.

    Raises ServiceError naming the port and setting when a port is taken, with the log
    tail when a service exits during start, and on a health-check time-out.
    """
    services = all_services(settings)
    wanted = select(settings, names)
    sup = Supervisor(settings)
    sup.ensure(services)
    rpc = sup.rpc()
    for svc in wanted:  # start everything first, then wait: the slow starts overlap
        info = sup.info(svc.name)
        if info and info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
            continue  # BACKOFF: supervisord is restarting it; the wait below reports it
        clear_orphans(settings, svc)
        if not port_free(settings.host, svc.port):
            raise ServiceError(
                f"port {svc.port} on {settings.host} is already taken, so {svc.name} cannot "
                f"start there; stop what uses it or set {env_name(svc.port_setting)} "
                f"to a free port"
            )
        if svc.prepare:
            svc.prepare()
        try:
            rpc.startProcess(svc.name, False)
        except xmlrpc.client.Fault as exc:
            raise ServiceError(
                f"{svc.name} did not start: {exc.faultString}\n{tail(sup.log_file(svc.name))}"
            ) from None
    for svc in wanted:
        _wait_healthy(settings, sup, svc, on_wait)
    return wanted


def _wait_healthy(settings, sup: Supervisor, svc: Service, on_wait) -> None:
    url = svc.url(settings) + svc.health_path
    start = time.monotonic()
    while True:
        if healthy(url):
            return
        info = sup.info(svc.name)
        if info is None or info["statename"] in ("EXITED", "FATAL", "STOPPED", "BACKOFF"):
            code = info.get("exitstatus") if info else None
            raise ServiceError(
                f"{svc.name} exited during start (exit status {code}); "
                f"last lines of {sup.log_file(svc.name)}:\n{tail(sup.log_file(svc.name))}"
            )
        waited = time.monotonic() - start
        if waited > settings.health_timeout_s:
            raise ServiceError(
                f"{svc.name} did not answer {url} within {settings.health_timeout_s:.0f} s "
                f"(FLYWHEEL_HEALTH_TIMEOUT_S); last lines of its log:\n"
                f"{tail(sup.log_file(svc.name))}"
            )
        if on_wait:
            on_wait(svc, waited)
        time.sleep(0.5)


def down(settings: Settings, names: Iterable[str] = ()) -> None:
    """Stop the named services, or all of them and supervisord. Harmless when none run."""
    sup = Supervisor(settings)
    names = list(names)
    if not names:
        sup.shutdown()
        return
    for svc in select(settings, names):
        info = sup.info(svc.name)
        if info and info["statename"] in ("RUNNING", "STARTING"):
            sup.rpc().stopProcess(svc.name, True)
