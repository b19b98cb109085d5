"""Private files on the dev box: the home folder, configs and secrets.

    ensure_home(home) -> Path                   the home folder, mode 0700 (tightened if looser)
    write_private(path, text, mode=0o600)       replace a file atomically, final mode from birth
    create_private(path, text, mode=0o600)      create it once (False when it already exists)

Both writers put the text in a temporary file in the same folder (created 0600 by
`tempfile.mkstemp`), flush and fsync it, set the final mode, then move it into place in one
step (`os.replace`, or `os.link` for create-once), so no reader ever sees a half-written
secret or a file that was briefly readable by others. The services also run with umask 077
(supervisord's `umask`, flywheel.services), so what they create is private too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

HOME_MODE = 0o700


def ensure_home(home: Path) -> Path:
    """Create `home` (and missing parents) and make it 0700."""
    home = Path(home)
    home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o777 != HOME_MODE:
        home.chmod(HOME_MODE)
    return home


def _temp_with(path: Path, text: str, mode: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` to `path` atomically with `mode` (replacing what was there)."""
    path = Path(path)
    tmp = _temp_with(path, text, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_private(path: Path, text: str, mode: int = 0o600) -> bool:
    """Create `path` with `text` and `mode` unless it exists; True when this call made it."""
    path = Path(path)
    tmp = _temp_with(path, text, mode)
    try:
        os.link(tmp, path)  # atomic, and never replaces a secret another process just made
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
