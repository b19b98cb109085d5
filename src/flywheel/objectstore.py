"""Bytes and parquet by URI: a local path or `s3://bucket/key` (any S3-compatible server).

State that one step of the loop hands to another (the catalogue, item images, label
snapshots, the training set) is named by a URI. On the dev box it is a path under
`<home>/data`; in cluster mode it lives under `settings.state_uri` (e.g.
`s3://flywheel/state`), so a pod never depends on another pod's disk. The endpoint and
credentials come from the settings (`FLYWHEEL_S3_ENDPOINT`, `FLYWHEEL_S3_ACCESS_KEY`,
`FLYWHEEL_S3_SECRET_KEY`, `FLYWHEEL_S3_REGION`); without keys the AWS default chain applies.

Writes are atomic for readers: a local file is written beside and renamed; an S3 object
appears whole when its upload completes. One library (pyarrow's filesystems) does both.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from flywheel.errors import InputError, ServiceError
from flywheel.settings import Settings

S3 = "s3://"


def is_remote(uri: str | Path) -> bool:
    return str(uri).startswith(S3)


def join(base: str | Path, *parts: str) -> str:
    """`base` joined with `parts` by `/` (a URI) or as a path (local)."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def location(uri: str | Path) -> Path | str:
    """A local URI as a Path, a remote one as its string."""
    return str(uri) if is_remote(uri) else Path(uri)


def state_uri(settings: Settings, *parts: str) -> str:
    """Where cross-step state lives: `settings.state_uri` (cluster), else `<home>/data`."""
    return join(settings.state_uri or settings.data_dir, *parts)


def filesystem(settings: Settings, uri: str | Path):
    """(pyarrow filesystem, path within it) for a URI."""
    from pyarrow import fs

    uri = str(uri)
    if not is_remote(uri):
        return fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    return _s3(*_s3_options(settings)), uri[len(S3) :]


def _s3_options(settings: Settings) -> tuple:
    endpoint = settings.s3_endpoint or settings.feast_s3_endpoint
    access = settings.s3_access_key
    secret = settings.s3_secret_key
    return (
        endpoint,
        access.get_secret_value() if access else None,
        secret.get_secret_value() if secret else None,
        settings.s3_region,
    )


@lru_cache(maxsize=8)
def _s3(endpoint: str | None, access: str | None, secret: str | None, region: str):
    from pyarrow import fs

    return fs.S3FileSystem(**_options(endpoint, access, secret, region))


def _options(endpoint: str | None, access: str | None, secret: str | None, region: str) -> dict:
    options: dict = {"region": region}
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    if access and secret:
        options.update(access_key=access, secret_key=secret)
    return options


def _fail(action: str, uri: str, exc: Exception) -> ServiceError:
    return ServiceError(f"could not {action} {uri}: {exc}")


def exists(settings: Settings, uri: str | Path) -> bool:
    from pyarrow import fs

    filesystem_, path = filesystem(settings, uri)
    try:
        return filesystem_.get_file_info(path).type != fs.FileType.NotFound
    except OSError as exc:
        raise _fail("look up", str(uri), exc) from None


def read_bytes(settings: Settings, uri: str | Path) -> bytes:
    """The object's bytes; a missing one raises InputError naming it."""
    filesystem_, path = filesystem(settings, uri)
    try:
        with filesystem_.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise InputError(f"no object at {uri}") from None
    except OSError as exc:
        if "NoSuchKey" in str(exc) or "does not exist" in str(exc):
            raise InputError(f"no object at {uri}") from None
        raise _fail("read", str(uri), exc) from None


def write_bytes(settings: Settings, uri: str | Path, data: bytes) -> str:
    """Write `data` at `uri` (parents created); returns the URI."""
    filesystem_, path = filesystem(settings, uri)
    try:
        if is_remote(uri):
            with filesystem_.open_output_stream(path) as out:
                out.write(data)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{path}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
    except OSError as exc:
        raise _fail("write", str(uri), exc) from None
    return str(uri)


def read_parquet(settings: Settings, uri: str | Path, columns: list[str] | None = None):
    """A parquet file as a pandas frame."""
    import pyarrow.parquet as pq

    data = read_bytes(settings, uri)
    try:
        return pq.read_table(io.BytesIO(data), columns=columns).to_pandas()
    except Exception as exc:  # ArrowInvalid: not parquet
        raise InputError(f"{uri} is not a readable parquet file: {exc}") from None


def write_parquet(settings: Settings, frame, uri: str | Path) -> str:
    """A pandas frame as parquet at `uri` (no index); returns the URI."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return write_bytes(settings, uri, buffer.getvalue())


def ensure_bucket(settings: Settings, uri: str) -> None:
    """Create the bucket of an s3:// URI if it does not exist (setup, tests, rehearsal)."""
    if not is_remote(uri):
        return
    from pyarrow import fs

    options = _options(*_s3_options(settings)) | {"allow_bucket_creation": True}
    bucket = str(uri)[len(S3) :].split("/", 1)[0]
    try:
        fs.S3FileSystem(**options).create_dir(bucket)
    except OSError as exc:
        if "BucketAlreadyOwnedByYou" not in str(exc) and "already" not in str(exc).lower():
            raise _fail("create bucket", bucket, exc) from None
