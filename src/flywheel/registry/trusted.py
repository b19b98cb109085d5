"""Trusted models: only the format flywheel writes, only versions its trainer stamped.

    stamp(settings, version, run_id, snapshot_id) -> Provenance     (the trainer, after logging)
    load_trusted(settings, version) -> TrustedModel                 (predictor, scoring, evaluation)

A model version is loaded only when every rule holds; otherwise `UntrustedModel` names the
rule that failed and nothing of the model has been deserialised:

1. Format: the MLmodel file has the `pytorch` flavor whose data is `data/model.pt2`
   (torch.export); there is no pickled `model.pth`, no `code` entry in any flavor (MLflow's
   `code_paths`, which its loader puts on `sys.path`) and no `code/` folder.
2. Provenance: the version carries the tag `flywheel.provenance`, JSON
   `{"run_id", "snapshot_id", "sha256"}` that the trainer wrote after registering it;
   `run_id` is the version's own run, `snapshot_id` is the run's `snapshot_id` tag (when the
   run has one) and `sha256` is the digest of `model.pt2` exactly as downloaded.
3. Content: every record of the `.pt2` archive is JSON/text or loads with torch's
   `weights_only` unpickler (MLflow's own pt2 validator, fail-closed if it is missing); only
   then does `torch.export.load` read it.

mlflow and torch are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.errors import FlywheelError

log = logging.getLogger("flywheel.registry.trusted")

TAG = "flywheel.provenance"
PT2 = Path("data") / "model.pt2"


class UntrustedModel(FlywheelError):
    """A model version that breaks one of the loading rules (see the module docstring)."""


@dataclass(frozen=True)
class Provenance:
    run_id: str
    snapshot_id: str
    sha256: str

    def to_json(self) -> str:
        return json.dumps(
            {"run_id": self.run_id, "snapshot_id": self.snapshot_id, "sha256": self.sha256},
            sort_keys=True,
        )


@dataclass(frozen=True)
class TrustedModel:
    module: Any  # torch.nn.Module (the exported program's module, on the CPU)
    version: str
    classes: list[str]
    n_features: int | None
    provenance: Provenance


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _client(settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _download(settings, version: str, dst: str) -> Path:
    import mlflow

    mlflow.set_registry_uri(settings.tracking_uri)  # `models:/` URIs resolve there
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{settings.model_name}/{version}",
            dst_path=dst,
            tracking_uri=settings.tracking_uri,
        )
    )


def stamp(settings, version: str, run_id: str, snapshot_id: str) -> Provenance:
    """Write the provenance tag on a version the trainer has just registered."""
    with tempfile.TemporaryDirectory(prefix="flywheel-stamp-") as tmp:
        path = _download(settings, version, tmp)
        check_format(path)
        provenance = Provenance(run_id, snapshot_id or "none", sha256_file(path / PT2))
    _client(settings).set_model_version_tag(settings.model_name, version, TAG, provenance.to_json())
    return provenance


def check_format(path: Path) -> None:
    """Rule 1 on a downloaded model folder (reads only the YAML MLmodel file)."""
    from mlflow.models import Model

    where = f"model folder {path.name!r}"
    if not (path / "MLmodel").is_file():
        raise UntrustedModel(f"{where} has no MLmodel file")
    meta = Model.load(str(path))
    flavor = meta.flavors.get("pytorch")
    if flavor is None:
        raise UntrustedModel(
            f"{where} is not an mlflow.pytorch model (flavors: {sorted(meta.flavors)})"
        )
    for name, conf in meta.flavors.items():
        if isinstance(conf, dict) and conf.get("code"):
            raise UntrustedModel(
                f"{where}: flavor {name!r} ships code ({conf['code']!r}, MLflow code_paths); "
                "flywheel loads no code from a model"
            )
    if (path / "code").exists():
        raise UntrustedModel(f"{where} has a code/ folder; flywheel loads no code from a model")
    if (path / "data" / "model.pth").exists() or not (path / PT2).is_file():
        raise UntrustedModel(
            f"{where} is not in the pt2 (torch.export) format flywheel writes "
            "(a pickled model.pth or no data/model.pt2); pickled models are never loaded"
        )


def provenance_of(settings, version: str) -> Provenance:
    """Rule 2, the registry side: the tag, its run id and snapshot id (not yet the digest)."""
    client = _client(settings)
    mv = client.get_model_version(settings.model_name, version)
    text = (mv.tags or {}).get(TAG)
    where = f"version {version} of {settings.model_name!r}"
    if not text:
        raise UntrustedModel(
            f"{where} has no {TAG} tag: it was not registered by flywheel's trainer"
        )
    try:
        raw = json.loads(text)
        provenance = Provenance(str(raw["run_id"]), str(raw["snapshot_id"]), str(raw["sha256"]))
    except (ValueError, TypeError, KeyError):
        raise UntrustedModel(f"{where}: the {TAG} tag is not valid JSON provenance") from None
    if provenance.run_id != mv.run_id:
        raise UntrustedModel(
            f"{where}: provenance names run {provenance.run_id}, but the version comes from "
            f"run {mv.run_id}"
        )
    run_snapshot = client.get_run(mv.run_id).data.tags.get("snapshot_id") if mv.run_id else None
    if run_snapshot is not None and run_snapshot != provenance.snapshot_id:
        raise UntrustedModel(
            f"{where}: provenance names snapshot {provenance.snapshot_id}, but its run "
            f"trained on {run_snapshot}"
        )
    return provenance


def check_pickle_free(model_file: Path) -> None:
    """Rule 3: every record of the archive is data, not a pickled object."""
    try:
        from mlflow.pytorch import _validate_pt2_archive_is_pickle_free as validate
    except ImportError:  # fail closed: never load what cannot be checked
        raise UntrustedModel(
            "this MLflow has no pt2 archive validator; cannot check the model is pickle-free"
        ) from None
    from mlflow.exceptions import MlflowException

    try:
        validate(str(model_file))
    except MlflowException as exc:
        raise UntrustedModel(f"model.pt2 is not pickle-free: {exc.message}") from None


def warm_up() -> None:
    """Import what a first load needs (MLflow's registry client and its request-header
    plugins, which import Feast; the pt2 validator; torch's export loader): many seconds on
    a busy box, better spent at start than inside the first reload request."""
    import mlflow.pytorch  # noqa: F401
    import mlflow.store.model_registry.rest_store  # noqa: F401
    import mlflow.store.tracking.rest_store  # noqa: F401
    import mlflow.tracking.request_header.registry  # noqa: F401
    import torch._export.serde.serialize  # noqa: F401
    import torch.export  # noqa: F401


def load_trusted(settings, version: str) -> TrustedModel:
    """Check the three rules on `models:/<name>/<version>`, then load it (CPU)."""
    import torch
    from mlflow.models import Model

    version = str(version)
    provenance = provenance_of(settings, version)
    with tempfile.TemporaryDirectory(prefix="flywheel-model-") as tmp:
        path = _download(settings, version, tmp)
        check_format(path)
        digest = sha256_file(path / PT2)
        if digest != provenance.sha256:
            raise UntrustedModel(
                f"version {version}: model.pt2 has digest {digest[:16]}..., but its provenance "
                f"says {provenance.sha256[:16]}...: the artifact changed after training"
            )
        check_pickle_free(path / PT2)
        meta = Model.load(str(path))
        module = torch.export.load(str(path / PT2)).module()
    classes = [str(c) for c in (meta.metadata or {}).get("classes", [])]
    n_features = None
    if meta.signature is not None and meta.signature.inputs.is_tensor_spec():
        shape = meta.signature.inputs.inputs[0].shape
        n_features = int(shape[-1]) if len(shape) == 2 and shape[-1] > 0 else None
    return TrustedModel(module, version, classes, n_features, provenance)
