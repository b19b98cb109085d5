"""Disk full under a serving process: a transformer whose files may not grow past a limit
(`ulimit -f`, RLIMIT_FSIZE, on the real process) keeps answering every request; the
prediction log holds only whole lines and the lost records are counted where `flywheel
status` shows them."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx

from flywheel import services
from flywheel.serving.predlog import PredictionLog, read_predictions, write_errors
from tests.conftest import ROOT, free_port, settings_env
from tests.serving.conftest import MODEL

LIMIT = 8 * 2**20  # bytes any file of the process may reach
REQUESTS = 60


def test_serving_survives_a_full_disk_with_whole_log_lines(serving, tmp_path):
    settings = serving.settings
    # the log's next part already sits just below the limit (a sparse file ending a line)
    plog = PredictionLog.for_settings(settings)
    day = f"{datetime.now(UTC):%Y-%m-%d}"
    plog.folder.mkdir(parents=True, exist_ok=True)
    part = plog._last_part(day) + 1
    padded = plog._file(day, part)
    with padded.open("wb") as fh:
        fh.truncate(LIMIT - 6000)
        fh.seek(LIMIT - 6001)
        fh.write(b"\n")
    port = free_port()
    env = {**settings_env(settings), "FLYWHEEL_PREDLOG_MAX_BYTES": str(2**30)}
    args = ["--model_name", MODEL, "--http_port", str(port)]
    args += ["--predictor_host", f"127.0.0.1:{settings.predictor_port}"]
    log = tmp_path / "transformer.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.serving.transformer", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT)),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while not services.healthy(f"{url}/v2/health/live"):
            assert proc.poll() is None, services.tail(log)
            assert time.monotonic() < deadline, services.tail(log)
            time.sleep(0.5)
        codes = []
        with httpx.Client(timeout=30) as http:
            for n in range(REQUESTS):
                body = {"instances": serving.items[n % 8 : n % 8 + 4]}
                codes.append(http.post(f"{url}/v1/models/{MODEL}:predict", json=body).status_code)
        assert codes == [200] * REQUESTS  # serving kept answering
        assert proc.poll() is None
        [state] = [s for s in write_errors(settings) if s["pid"] == proc.pid]
        assert state["write_errors"] > 0 and state["written"] > 0
        assert state["written"] + state["records_lost"] == REQUESTS * 4
        print(
            f"\ndisk full: {REQUESTS} requests answered, {state['written']} records logged, "
            f"{state['records_lost']} lost and counted"
        )
        frame = read_predictions(settings)
        assert frame.attrs["skipped_lines"] <= 2  # the padding and at most one torn line
        with padded.open("rb") as fh:
            fh.seek(LIMIT - 6000)
            tail = fh.read()
        whole = [line for line in tail.split(b"\n") if line.strip(b"\0")]
        torn = [line for line in whole if not line.endswith(b"}")]
        assert len(torn) <= 1 and len(whole) - len(torn) == state["written"]
    finally:
        proc.terminate()
        proc.wait(30)
        padded.unlink(missing_ok=True)
