"""The chart's db-init Job script, run as rendered against a real Postgres (Debian's, in a
temporary cluster on a free loopback port): one role per service owns its databases (tables
made earlier by the superuser included), other roles cannot connect, and a second run
changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.deploy.render import render
from tests.conftest import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = pytest.mark.skipif(
    not (BIN / "initdb").exists() or shutil.which("runuser") is None,
    reason="Debian postgresql 15 (apt-get install postgresql) is needed for this test",
)
ADMIN, ADMIN_PW = "flywheel", "admin-pw-for-this-test-only"


def as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + args, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def postgres():
    import tempfile

    # Not under pytest's tmp (0700, root's): the postgres user must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(ADMIN_PW)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    out = as_postgres(
        [
            str(BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            ADMIN,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
        ]
    )
    assert out.returncode == 0, out.stderr
    port = free_port()
    out = as_postgres(
        [
            str(BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
        ]
    )
    assert out.returncode == 0, out.stderr + (root / "log").read_text()
    try:
        yield {"PGHOST": "127.0.0.1", "PGPORT": str(port)}
    finally:
        as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def psql(env: dict, user: str, password: str, db: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-tA", "-d", db, "-c", sql],
        env={**os.environ, **env, "PGUSER": user, "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_db_init_gives_each_service_its_own_role(postgres):
    job = render("dev").get("Job", "db-init")
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    passwords = {"FEAST": "feast-pw-1", "LABELSTUDIO": "ls-pw-2", "MLFLOW": "mlflow-pw-3"}
    env = {
        **os.environ,
        **postgres,
        "PGUSER": ADMIN,
        "PGPASSWORD": ADMIN_PW,
        **{f"ROLE_PASSWORD_{k}": v for k, v in passwords.items()},
    }
    # An install from before this Job: the database exists, its table owned by the superuser.
    assert psql(postgres, ADMIN, ADMIN_PW, "postgres", "CREATE DATABASE mlflow").returncode == 0
    made = psql(postgres, ADMIN, ADMIN_PW, "mlflow", "CREATE TABLE runs (id int)")
    assert made.returncode == 0, made.stderr
    for attempt in range(2):  # idempotent
        run = subprocess.run(
            ["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, (attempt, run.stdout, run.stderr)
    assert "database mlflow_auth: owned by role flywheel_mlflow" in run.stdout
    owner = psql(
        postgres,
        "flywheel_mlflow",
        "mlflow-pw-3",
        "mlflow",
        "INSERT INTO runs VALUES (1); ALTER TABLE runs ADD COLUMN x int; "
        "SELECT tableowner FROM pg_tables WHERE tablename = 'runs'",
    )
    assert owner.returncode == 0 and owner.stdout.strip().endswith("flywheel_mlflow"), owner
    other = psql(postgres, "flywheel_feast", "feast-pw-1", "mlflow", "SELECT 1")
    assert other.returncode != 0 and "permission denied" in other.stderr
    ls = psql(postgres, "flywheel_labelstudio", "ls-pw-2", "labelstudio", "CREATE TABLE t (i int)")
    assert ls.returncode == 0, ls.stderr
    superuser = psql(
        postgres,
        "flywheel_labelstudio",
        "ls-pw-2",
        "labelstudio",
        "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles "
        "WHERE rolname = current_user",
    )
    assert superuser.stdout.strip() == "f"
    wrong = psql(postgres, "flywheel_mlflow", "not-the-password", "mlflow", "SELECT 1")
    assert wrong.returncode != 0


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 API server (moto_server) on a free loopback port, with the bucket."""
    import boto3
    import httpx

    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test-key-id",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FLYWHEEL_S3_BUCKET": "flywheel-backups-test",
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(env["AWS_ENDPOINT_URL"], timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.3)
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=env["FLYWHEEL_S3_BUCKET"])
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_backup_then_restore(postgres, s3, tmp_path):
    """The CronJob's dump script and upload step, then `flywheel restore-cluster` brings back a
    table that was dropped after the backup."""
    from tests.conftest import ROOT

    admin = {**os.environ, **postgres, "PGUSER": ADMIN, "PGPASSWORD": ADMIN_PW}
    made = psql(
        postgres,
        ADMIN,
        ADMIN_PW,
        "feast",
        "CREATE TABLE IF NOT EXISTS items (id text); "
        "INSERT INTO items VALUES ('digits-0001'), ('digits-0002')",
    )
    assert made.returncode == 0, made.stderr
    cron = render("dev").get("CronJob", "db-backup")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = pod["initContainers"][0]["command"][-1].replace("/backup", str(tmp_path))
    dumped = subprocess.run(
        ["sh", "-ec", script], env=admin, capture_output=True, text=True, timeout=300
    )
    assert dumped.returncode == 0, dumped.stderr
    assert pod["containers"][0]["command"][-3:] == ["flywheel.deploy.backup", "upload", "/backup"]
    env = {**admin, **s3, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    up = subprocess.run(
        [sys.executable, "-m", "flywheel.deploy.backup", "upload", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    assert psql(postgres, ADMIN, ADMIN_PW, "feast", "DROP TABLE items").returncode == 0

    def flywheel(*args):
        return subprocess.run(
            [sys.executable, "-m", "flywheel.cli", "restore-cluster", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )

    listed = flywheel("--list")
    assert listed.returncode == 0 and "feast" in listed.stdout, listed.stderr
    refused = flywheel()
    assert refused.returncode != 0 and "--yes" in refused.stderr
    restored = flywheel("--database", "feast", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    rows = psql(postgres, ADMIN, ADMIN_PW, "feast", "SELECT count(*) FROM items")
    assert rows.stdout.strip() == "2", rows
    owner = psql(
        postgres,
        ADMIN,
        ADMIN_PW,
        "feast",
        "SELECT tableowner FROM pg_tables WHERE tablename = 'items'",
    )
    assert owner.stdout.strip() in ("flywheel_feast", ADMIN)
    unknown = flywheel("--backup", "19990101T000000Z", "--yes")
    assert unknown.returncode != 0 and "no backup '19990101T000000Z'" in unknown.stderr


def test_bucket_setup_turns_on_versioning(s3):
    """The S3 setup Job's command against a real S3 API: bucket made, versioning on."""
    import boto3

    env = {**os.environ, **s3, "FLYWHEEL_S3_BUCKET": "flywheel-setup-test"}
    job = render("dev").get("Job", "seaweedfs-setup")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["python", "-m", "flywheel.deploy.backup", "bucket"]
    for _ in range(2):  # idempotent
        out = subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0 and "(versioned)" in out.stdout, out.stdout + out.stderr
    client = boto3.client(
        "s3",
        endpoint_url=s3["AWS_ENDPOINT_URL"],
        aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    assert client.get_bucket_versioning(Bucket="flywheel-setup-test")["Status"] == "Enabled"
