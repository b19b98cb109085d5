"""The S3-compatible object store for the rehearsal and the tests: moto's server.

`moto[server]` (PyPI, Apache-2.0) is a real HTTP server speaking the S3 REST API (buckets,
objects, multipart uploads, versioning), installed with the platform's Python packages:
no binary download, no container, starts in about a second. Its state lives in memory, so
it is for rehearsals and tests only; the cluster runs a durable S3 server (see the chart).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import ServiceError


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(port: int, log: Path, timeout_s: float = 30.0) -> S3Server:
    """Start moto's S3 server on 127.0.0.1:port with fresh random credentials."""
    import secrets

    import httpx

    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["MOTO_PORT"] = str(port)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    server = S3Server(endpoint, "fw" + secrets.token_hex(8), secrets.token_hex(20), process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"the S3 server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code < 500:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise ServiceError(
        f"the S3 server on {endpoint} did not answer in {timeout_s:.0f} s; see {log}"
    )
