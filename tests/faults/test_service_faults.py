"""SIGKILL of services while they work: the predictor under load, MLflow while the register
step promotes. Each must fail with a named error or complete, heal without a person, and
leave no duplicate version or alias behind. Recovery times are printed."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx

from flywheel import services
from flywheel.registry import PromotionConflict, RegistryUnavailable, promote, recover
from flywheel.registry.promotion import INTENT_TAG, _client
from tests.conftest import make_settings
from tests.faults.helpers import Load
from tests.serving.conftest import MODEL
from tests.training.test_registry import _aliases, _version

LOAD_S = 180  # upper bound of the predictor test's load (a restart loads the champion from
# MLflow: over a minute on a loaded 2-core box); it stops as soon as it has recovered


def _pid(settings, name: str) -> int:
    [row] = services.status(settings, [name])
    assert row.state == "running" and row.pid, row
    return row.pid


def test_predictor_sigkill_under_load_heals_by_itself(serving):
    url = f"{serving.transformer}/v1/models/{MODEL}:predict"
    load = Load(url, {"instances": serving.items[:4]}, clients=2).start()
    time.sleep(2)
    pid = _pid(serving.settings, "predictor")
    killed_at = time.monotonic() - load.t0
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + LOAD_S
    recovered_at = None
    while time.monotonic() < deadline:  # healed = 3 s of answers, all 200, after the kill
        time.sleep(0.5)
        now = time.monotonic() - load.t0
        late = [a for a in load.answers if a[0] > now - 3]
        if now - killed_at > 3 and late and all(a[1] == 200 for a in late):
            failed = [a[0] for a in load.answers if a[1] != 200]
            recovered_at = max(failed, default=killed_at)
            break
    time.sleep(2)
    load.stop()
    assert recovered_at is not None, load.answers[-5:]
    print(
        f"\npredictor SIGKILL under load: recovered in {recovered_at - killed_at:.1f} s, "
        f"{len(load.errors())} of {len(load.answers)} requests refused meanwhile"
    )
    for _, status, text in load.errors():
        assert status == 503 and text.startswith('{"error":'), (status, text)  # never a 500
    assert not load.errors(after=recovered_at + 0.01)
    [row] = services.status(serving.settings, ["predictor"])
    assert row.state == "running" and row.pid != pid and row.restarts >= 1


def test_mlflow_sigkill_during_register(tmp_path):
    import mlflow

    settings = make_settings(tmp_path / "home", model_name="faults-register", mlflow_retries=1)
    registry_before = mlflow.get_registry_uri()
    try:
        services.up(settings, ["mlflow"])
        mlflow.set_registry_uri(settings.tracking_uri)  # the helper's client uses the global
        made = [_version(settings, 0.50 + 0.05 * n) for n in range(6)]
        promote(settings, made[0])
        outcomes: list[tuple[str, str, float]] = []

        def register_steps():
            for version in made[1:]:
                start = time.monotonic()
                try:
                    d = promote(settings, version)
                    outcomes.append((version, d.action, time.monotonic() - start))
                except (RegistryUnavailable, PromotionConflict) as exc:
                    outcomes.append((version, type(exc).__name__, time.monotonic() - start))
                time.sleep(0.3)

        worker = threading.Thread(target=register_steps)
        worker.start()
        time.sleep(0.5)
        killed = time.monotonic()
        os.kill(_pid(settings, "mlflow"), signal.SIGKILL)
        worker.join(300)
        assert not worker.is_alive()
        while not services.healthy(settings.tracking_uri + "/health"):
            assert time.monotonic() - killed < 180, services.tail(settings.log_dir / "mlflow.log")
            time.sleep(0.3)
        healed = time.monotonic() - killed
        failed = [o for o in outcomes if o[1] != "promoted"]
        print(
            f"\nMLflow SIGKILL in register: back by itself in {healed:.1f} s; "
            f"{len(failed)} of {len(outcomes)} promotions failed with a named error "
            f"(longest {max((o[2] for o in failed), default=0):.1f} s)"
        )
        assert all(o[1] in ("promoted", "RegistryUnavailable") for o in outcomes), outcomes
        assert all(o[2] < 60 for o in outcomes), outcomes  # nothing hangs
        recover(settings)  # an interrupted move, if any, is completed
        assert promote(settings, made[-1]).action in ("promoted", "unchanged")
        aliases = _aliases(settings)
        assert aliases["champion"] == made[-1] and aliases["previous"] != made[-1]
        client = _client(settings)
        assert INTENT_TAG not in (client.get_registered_model(settings.model_name).tags or {})
        found = client.search_model_versions(f"name='{settings.model_name}'")
        assert sorted(int(v.version) for v in found) == sorted(int(v) for v in made)
    finally:
        mlflow.set_registry_uri(registry_before)
        services.down(settings)


def test_label_studio_sigkill_during_export(stack, tmp_path):
    """Label Studio (the session's, supervised) killed while exports run: each export
    completes or fails with a named error; it comes back by itself with every label."""
    import uuid

    from pydantic import SecretStr

    from flywheel.errors import ServiceError
    from flywheel.labelling import client as lsc
    from flywheel.labelling import export_labels
    from flywheel.labelling.annotator import choice_result

    settings = stack.model_copy(
        update={
            "label_studio_project": f"faults-export-{uuid.uuid4().hex[:6]}",
            "home": tmp_path / "home",
            "label_studio_token": SecretStr(stack.ls_token),
        }
    )
    project = lsc.ensure_project(settings)
    tasks = [
        {
            "data": {"image": f"/data/none-{n}.png", "item_id": f"export-{n:03d}"},
            "annotations": [{"result": choice_result(str(n % 10))}],
        }
        for n in range(40)
    ]
    lsc.client(settings).projects.import_tasks(id=project.id, request=tasks)
    before = export_labels(settings)
    outcomes: list[str] = []
    stop = threading.Event()

    def exports():
        while not stop.is_set():
            try:
                snap = export_labels(settings)
                outcomes.append("same" if snap.snapshot_id == before.snapshot_id else "DIFFERENT")
            except ServiceError:
                outcomes.append("ServiceError")
            time.sleep(0.2)

    worker = threading.Thread(target=exports)
    worker.start()
    time.sleep(1)
    killed = time.monotonic()
    os.kill(_pid(stack, "label-studio"), signal.SIGKILL)
    try:
        while not services.healthy(stack.label_studio_base_url + "/health"):
            assert time.monotonic() - killed < 240, services.tail(
                stack.log_dir / "label-studio.log"
            )
            time.sleep(0.5)
        healed = time.monotonic() - killed
    finally:
        stop.set()
        worker.join(300)
    after = export_labels(settings)
    print(
        f"\nLabel Studio SIGKILL during export: back by itself in {healed:.1f} s; "
        f"{outcomes.count('ServiceError')} of {len(outcomes)} exports failed with a named error"
    )
    assert set(outcomes) <= {"same", "ServiceError"}, outcomes
    assert after.snapshot_id == before.snapshot_id and len(after.frame) == 40


def test_health_of_the_transformer_after_the_faults(serving):
    """The shared servers are fit for the next tests."""
    resp = httpx.post(
        f"{serving.transformer}/v1/models/{MODEL}:predict",
        json={"instances": serving.items[:2]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
