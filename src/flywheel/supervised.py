"""Run a dev-box service so that no process of an earlier run of it outlives that run.

supervisord starts every service as `python -m flywheel.supervised -- COMMAND...` with the
environment variable `FLYWHEEL_SERVICE_MARK=<run dir>:<service>` (the marker). Every process
the service starts inherits the marker, so processes of a service can be found by it even
after their parent died: a SIGKILL of the MLflow server process leaves its uvicorn worker
alive, re-parented to init and holding port 5000; `stopasgroup`/`killasgroup` do not reach it
because supervisord never saw the kill. Before it `exec`s COMMAND (keeping its pid, so
supervisord supervises the real server), this launcher ends every other process that carries
its marker: SIGTERM, a short grace, then SIGKILL. `flywheel up` does the same for a service
that is not running before it checks the port (`services.clear_orphans`).

The marker is not a FLYWHEEL_<setting> name on purpose: `Settings.to_env(base=True)` drops
those, and children of a service (a turn the trigger starts) must keep the marker.
"""

from __future__ import annotations

import os
import signal
import sys
import time

MARK = "FLYWHEEL_SERVICE_MARK"
GRACE_S = 5.0


def mark(run_dir, name: str) -> str:
    """The marker value of service `name` of the home whose run dir is `run_dir`."""
    return f"{run_dir}:{name}"


def marked(value: str, exclude: set[int] | None = None) -> list[int]:
    """Pids of this user's processes whose environment carries MARK=value."""
    import psutil

    exclude = exclude or set()
    me = os.getuid()
    pids = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.info["pid"] in exclude or not proc.info["uids"] or proc.info["uids"].real != me:
                continue
            if proc.environ().get(MARK) == value:
                pids.append(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return pids


def end(pids: list[int], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM `pids`, wait up to `grace_s`, SIGKILL what is left. Returns the pids ended."""
    import psutil

    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in procs]


def clear(value: str, exclude: set[int] | None = None) -> list[int]:
    """End every process carrying marker `value` (but those in `exclude`)."""
    return end(marked(value, exclude))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.exit("usage: python -m flywheel.supervised -- COMMAND [ARGS...]")
    value = os.environ.get(MARK)
    if value:
        ended = clear(value, exclude={os.getpid()})
        if ended:
            print(
                f"flywheel.supervised: ended {len(ended)} leftover process(es) of an earlier "
                f"run ({', '.join(map(str, ended))})",
                flush=True,
            )
            time.sleep(0.2)  # let the kernel release their sockets
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
