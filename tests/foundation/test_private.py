"""The dev box keeps to itself: home 0700, secrets and configs written atomically with their
final mode, services under umask 077, loopback unless FLYWHEEL_ALLOW_REMOTE (then MLflow
asks for a login), and Label Studio refuses self-service signup."""

from __future__ import annotations

import os
import re
import stat
import uuid

import httpx
import pytest

from flywheel import services
from flywheel.errors import SettingsError
from flywheel.private import create_private, ensure_home, write_private
from tests.conftest import make_settings


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture()
def open_umask():
    old = os.umask(0)  # the writers must not rely on the caller's umask
    yield
    os.umask(old)


def test_home_is_0700_even_when_it_was_open(tmp_path, open_umask):
    home = ensure_home(tmp_path / "a" / "home")
    assert mode(home) == 0o700
    home.chmod(0o755)
    ensure_home(home)
    assert mode(home) == 0o700


def test_private_writes_are_atomic_with_their_final_mode(tmp_path, open_umask):
    path = tmp_path / "conf" / "x.conf"
    write_private(path, "one")
    assert path.read_text() == "one" and mode(path) == 0o600
    write_private(path, "two", mode=0o640)
    assert path.read_text() == "two" and mode(path) == 0o640
    assert create_private(tmp_path / "s", "first") is True
    assert create_private(tmp_path / "s", "second") is False  # never replaces a secret
    assert (tmp_path / "s").read_text() == "first" and mode(tmp_path / "s") == 0o600
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_generated_secrets_are_private(tmp_path, open_umask):
    settings = make_settings(tmp_path / "home")
    token = settings.ls_token
    assert settings.ls_token == token  # made once, kept
    assert mode(settings.home) == 0o700
    assert mode(settings.home / "secrets") == 0o700
    assert mode(settings.home / "secrets" / "label_studio_token") == 0o600


def test_non_loopback_host_needs_the_opt_in(tmp_path):
    with pytest.raises(SettingsError, match="FLYWHEEL_HOST=0.0.0.0 would open"):
        make_settings(tmp_path / "h", host="0.0.0.0")
    with pytest.raises(SettingsError, match="FLYWHEEL_ALLOW_REMOTE"):
        make_settings(tmp_path / "h", host="192.168.1.20")
    assert make_settings(tmp_path / "h", host="0.0.0.0", allow_remote=True).allow_remote
    assert make_settings(tmp_path / "h", host="localhost").host == "localhost"
    assert make_settings(tmp_path / "h", host="0.0.0.0", mode="cluster").mode == "cluster"


def test_services_run_private(stack):
    """The session's services: home 0700, the supervisord config 0600 with umask 077, and
    files a service created itself (MLflow's database) unreadable by others."""
    conf = stack.run_dir / "supervisord.conf"
    assert mode(stack.home) == 0o700
    assert mode(conf) == 0o600
    assert re.search(r"^umask=077$", conf.read_text(), re.M)
    created = stack.data_dir / "mlflow" / "mlflow.db"
    assert created.exists()
    assert mode(created) & 0o077 == 0, oct(mode(created))


def test_label_studio_signup_is_closed(stack):
    """A stranger cannot make an account on the real Label Studio (invite links only)."""
    base = stack.label_studio_base_url
    email = f"stranger-{uuid.uuid4().hex[:6]}@example.org"
    with httpx.Client(base_url=base, timeout=60) as http:
        page = http.get("/user/signup/")
        csrf = http.cookies.get("csrftoken")
        assert csrf, f"no CSRF cookie from the signup page ({page.status_code})"
        resp = http.post(
            "/user/signup/",
            data={
                "email": email,
                "password": "a-long-enough-password-1",
                "csrfmiddlewaretoken": csrf,
                "how_find_us": "",
            },
            headers={"Referer": f"{base}/user/signup/"},
        )
    assert resp.status_code == 403, (resp.status_code, resp.text[:300])
    users = httpx.get(
        f"{base}/api/users/",
        headers={"Authorization": f"Token {stack.ls_token}"},
        timeout=60,
    )
    assert users.status_code == 200, users.text[:300]
    assert email not in {u["email"] for u in users.json()}


def test_label_studio_serves_only_item_images(stack):
    env = services._label_studio(stack).env
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(stack.items_dir)
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert stack.data_dir / "label-studio" not in stack.items_dir.parents


def test_remote_dev_box_mlflow_requires_a_login(tmp_path):
    settings = make_settings(tmp_path / "home", allow_remote=True)
    try:
        services.up(settings, ["mlflow"])
        url = f"{settings.tracking_uri}/api/2.0/mlflow/experiments/search"
        anonymous = httpx.post(url, json={"max_results": 1}, timeout=30)
        assert anonymous.status_code == 401, anonymous.text[:300]
        env = services.mlflow_client_env(settings)
        login = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        wrong = httpx.post(url, json={"max_results": 1}, auth=(login[0], "nope"), timeout=30)
        assert wrong.status_code == 401
        ok = httpx.post(url, json={"max_results": 1}, auth=login, timeout=30)
        assert ok.status_code == 200, ok.text[:300]
        assert mode(settings.run_dir / "mlflow_auth.ini") == 0o600
    finally:
        services.down(settings)
