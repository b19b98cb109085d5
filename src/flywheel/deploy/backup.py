"""Postgres backups in the object store, and restoring one.

    python -m flywheel.deploy.backup upload DIR     the backup CronJob's second step
    python -m flywheel.deploy.backup bucket         the bucket, versioned (S3 setup Job)
    flywheel restore-cluster --list                 the backups, newest first
    flywheel restore-cluster [--backup STAMP] [--database NAME ...] --yes

A backup is one folder `s3://<bucket>/<prefix>/<STAMP>/` holding `<database>.dump` files
(`pg_dump --format=custom`, one per database, made by the CronJob's first container) and a
`manifest.json` (databases, sizes, sha256) written last, so a folder without one is an
unfinished backup and is never restored. `restore` downloads a backup (the newest by
default), checks every digest, then runs `pg_restore --clean --if-exists` into each
database, creating it when missing. It runs where the object store (AWS_* variables,
AWS_ENDPOINT_URL) and Postgres (PG* variables, the superuser) are reachable: a pod in the
release namespace (`kubectl run` with the platform image and the db-init Job's env), or a
workstation with `kubectl port-forward` to both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import InputError, ServiceError

PREFIX = "backups/postgres"
DB_NAME = re.compile(r"[a-z_][a-z0-9_]*")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Backup:
    stamp: str
    databases: dict[str, dict]  # name -> {"size": int, "sha256": str}


def _s3():
    import boto3

    return boto3.client("s3")  # endpoint, region and keys from AWS_* variables


def _bucket(bucket: str | None) -> str:
    bucket = bucket or os.environ.get("FLYWHEEL_S3_BUCKET")
    if not bucket:
        raise InputError("no bucket: set FLYWHEEL_S3_BUCKET (the chart's global.s3.bucket)")
    return bucket


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload(folder: Path, bucket: str | None = None, prefix: str = PREFIX, stamp: str | None = None):
    """Upload every `<db>.dump` in `folder` as one backup; the manifest goes last."""
    dumps = sorted(Path(folder).glob("*.dump"))
    if not dumps:
        raise InputError(f"no .dump files in {folder}: nothing to back up")
    bucket, s3 = _bucket(bucket), _s3()
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    databases = {}
    for dump in dumps:
        s3.upload_file(str(dump), bucket, f"{prefix}/{stamp}/{dump.name}")
        databases[dump.stem] = {"size": dump.stat().st_size, "sha256": _sha256(dump)}
    manifest = {"stamp": stamp, "databases": databases}
    s3.put_object(
        Bucket=bucket, Key=f"{prefix}/{stamp}/{MANIFEST}", Body=json.dumps(manifest).encode()
    )
    return Backup(stamp, databases)


def backups(bucket: str | None = None, prefix: str = PREFIX) -> list[Backup]:
    """Finished backups (those with a manifest), newest first."""
    bucket, s3 = _bucket(bucket), _s3()
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents") or []:
            if obj["Key"].endswith(f"/{MANIFEST}"):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                manifest = json.loads(body)
                found.append(Backup(manifest["stamp"], manifest["databases"]))
    return sorted(found, key=lambda b: b.stamp, reverse=True)


def _psql(sql: str, database: str = "postgres") -> str:
    out = subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-tA", "-d", database, "-c", sql],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise ServiceError(f"psql on {database}: {out.stderr.strip()}")
    return out.stdout.strip()


def restore(
    stamp: str | None = None,
    databases: list[str] | None = None,
    bucket: str | None = None,
    prefix: str = PREFIX,
    on_step=None,
) -> Backup:
    """Restore a backup (newest by default) into Postgres; returns what was restored."""
    bucket, s3 = _bucket(bucket), _s3()
    available = backups(bucket, prefix)
    if not available:
        raise InputError(f"no finished backup under s3://{bucket}/{prefix}/")
    chosen = next((b for b in available if b.stamp == stamp), None) if stamp else available[0]
    if chosen is None:
        known = ", ".join(b.stamp for b in available[:5])
        raise InputError(f"no backup {stamp!r} under s3://{bucket}/{prefix}/; newest: {known}")
    wanted = databases or sorted(chosen.databases)
    bad = [d for d in wanted if not DB_NAME.fullmatch(d)]
    if bad:
        raise InputError(f"not a database name: {', '.join(bad)}")
    missing = [d for d in wanted if d not in chosen.databases]
    if missing:
        raise InputError(f"backup {chosen.stamp} has no database {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="flywheel-restore-") as tmp:
        for name in wanted:  # download and check everything before touching Postgres
            path = Path(tmp) / f"{name}.dump"
            s3.download_file(bucket, f"{prefix}/{chosen.stamp}/{name}.dump", str(path))
            if _sha256(path) != chosen.databases[name]["sha256"]:
                raise ServiceError(
                    f"backup {chosen.stamp}: {name}.dump does not match its manifest digest; "
                    "nothing was restored"
                )
        for name in wanted:
            if on_step:
                on_step(name)
            exists = _psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
            if not exists:
                _psql(f'CREATE DATABASE "{name}"')
            out = subprocess.run(
                [
                    "pg_restore",
                    "--clean",
                    "--if-exists",
                    "--exit-on-error",
                    "-d",
                    name,
                    str(Path(tmp) / f"{name}.dump"),
                ],  # owners kept: the per-service roles
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise ServiceError(f"pg_restore of {name} failed: {out.stderr.strip()[-500:]}")
    return Backup(chosen.stamp, {d: chosen.databases[d] for d in wanted})


def ensure_bucket(bucket: str | None = None) -> bool:
    """Create the bucket if missing and turn on versioning; False when the server refuses
    versioning (said on stderr: the data is still stored, without old versions)."""
    from botocore.exceptions import ClientError

    bucket, s3 = _bucket(bucket), _s3()
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
    try:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    except ClientError as exc:
        print(f"bucket {bucket}: versioning not enabled ({exc})", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["bucket"]:
        versioned = ensure_bucket()
        print(f"bucket {_bucket(None)} ready ({'versioned' if versioned else 'not versioned'})")
        return 0
    if len(args) != 2 or args[0] != "upload":
        print("usage: python -m flywheel.deploy.backup upload DIR | bucket", file=sys.stderr)
        return 2
    done = upload(Path(args[1]))
    print(f"backup {done.stamp}: {', '.join(sorted(done.databases))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
