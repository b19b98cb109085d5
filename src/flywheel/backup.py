"""Backup and restore of the dev box: `flywheel backup [DEST]`, `flywheel restore SOURCE`.

A backup is a folder (default `<home>/backups/<UTC time>/`) holding what cannot be rebuilt:

    label-studio/label_studio.sqlite3   Label Studio's database (sqlite online backup)
    label-studio/media/                 its uploads and exports
    mlflow/mlflow.db                    MLflow's runs and registry (sqlite online backup)
    mlflow/artifacts/                   model files, figures
    trigger/trigger.sqlite3             the trigger's ledger (sqlite online backup)
    items/ catalogue.parquet snapshots/ the collection, its catalogue, the label snapshots
    secrets/                            generated passwords and tokens (mode 0700/0600)
    manifest.json                       every file with its size and sha256, written last

Databases are copied with sqlite's online backup API, so the services may keep running (a
backup is consistent per database). The Feast stores, logs and KFP outputs are rebuilt from
these (`flywheel features build`), so they are not in it.

`restore` checks the manifest (every file present with its checksum) before it touches
anything, refuses while a service that owns the data is running, moves what it replaces to
`<home>/backups/replaced-<UTC time>/` (nothing is lost), then puts each part in place with a
rename. A half-copied backup (no manifest) is refused.

On a cluster the charts back up Postgres and the object store instead (charts/).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import InputError, ServiceError
from flywheel.settings import Settings

MANIFEST = "manifest.json"


def parts(settings: Settings) -> dict[str, tuple[Path, str]]:
    """name in the backup -> (path on the box, "sqlite" | "tree" | "file")."""
    d = settings.data_dir
    return {
        "label-studio/label_studio.sqlite3": (
            d / "label-studio" / "label_studio.sqlite3",
            "sqlite",
        ),
        "label-studio/media": (d / "label-studio" / "media", "tree"),
        "mlflow/mlflow.db": (d / "mlflow" / "mlflow.db", "sqlite"),
        "mlflow/artifacts": (d / "mlflow" / "artifacts", "tree"),
        "trigger/trigger.sqlite3": (d / "trigger" / "trigger.sqlite3", "sqlite"),
        "items": (d / "items", "tree"),
        "catalogue.parquet": (settings.catalogue_path, "file"),
        "snapshots": (settings.snapshot_dir, "tree"),
        "secrets": (settings.home / "secrets", "tree"),
    }


# services whose data a restore replaces: they must be stopped first
OWNERS = {"label-studio": "label-studio", "mlflow": "mlflow", "trigger": "trigger"}


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live sqlite database (the online backup API)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(settings: Settings, dest: Path | None = None, progress=None) -> Path:
    """Write a backup folder; returns it. `progress(name)` is called per part."""
    dest = Path(dest) if dest else settings.home / "backups" / _stamp()
    if (dest / MANIFEST).exists() or (dest.exists() and any(dest.iterdir())):
        raise InputError(f"{dest} is not empty; give a new folder for the backup")
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o700)  # it holds the secrets
    for name, (src, kind) in parts(settings).items():
        if not src.exists():
            continue
        if progress:
            progress(name)
        target = dest / name
        if kind == "sqlite":
            _sqlite_copy(src, target)
        elif kind == "tree":
            shutil.copytree(src, target, symlinks=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    files = {
        str(p.relative_to(dest)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(dest.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "created": datetime.now(UTC).isoformat(),
        "home": str(settings.home),
        "parts": [n for n, (src, _) in parts(settings).items() if (dest / n).exists()],
        "files": files,
    }
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(dest / MANIFEST)  # last: a backup without it is incomplete
    return dest


def verify(source: Path) -> dict:
    """The manifest of a complete, intact backup, or an InputError saying what is wrong."""
    source = Path(source)
    if not (source / MANIFEST).exists():
        raise InputError(
            f"{source} is not a complete flywheel backup (no {MANIFEST}); "
            "it may have been interrupted: make a new one with `flywheel backup`"
        )
    manifest = json.loads((source / MANIFEST).read_text())
    for name, meta in manifest["files"].items():
        path = source / name
        if not path.is_file():
            raise InputError(f"backup {source} is missing {name}; nothing was restored")
        if path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
            raise InputError(
                f"backup {source}: {name} does not match its checksum; nothing was restored"
            )
    return manifest


def restore(settings: Settings, source: Path, progress=None) -> Path:
    """Put a backup in place under settings.home; returns where the replaced data went."""
    from flywheel import services

    source = Path(source)
    manifest = verify(source)
    running = [
        s.name
        for s in services.status(settings, [n for n in OWNERS if _known(settings, n)])
        if s.state not in ("stopped", "exited", "fatal")
    ]
    if running:
        raise ServiceError(
            f"{', '.join(running)} {'is' if len(running) == 1 else 'are'} running on this "
            f"home; stop {'it' if len(running) == 1 else 'them'} first: "
            f"`flywheel down {' '.join(running)}`"
        )
    aside = settings.home / "backups" / f"replaced-{_stamp()}"
    for name in manifest["parts"]:
        target, _ = parts(settings)[name]
        if progress:
            progress(name)
        incoming = target.with_name(target.name + ".restoring")
        _remove(incoming)
        incoming.parent.mkdir(parents=True, exist_ok=True)
        if (source / name).is_dir():
            shutil.copytree(source / name, incoming, symlinks=True)
        else:
            shutil.copy2(source / name, incoming)
        if target.exists():
            (aside / name).parent.mkdir(parents=True, exist_ok=True)
            target.replace(aside / name)
            for suffix in ("-wal", "-shm"):  # a live database's journal belongs to the old one
                journal = target.with_name(target.name + suffix)
                if journal.exists():
                    journal.replace(aside / (name + suffix))
        incoming.replace(target)
    secrets = settings.home / "secrets"
    if secrets.exists():
        os.chmod(secrets, 0o700)
        for p in secrets.iterdir():
            os.chmod(p, 0o600)
    return aside


def _known(settings: Settings, name: str) -> bool:
    from flywheel import services

    return name in {s.name for s in services.all_services(settings)}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
