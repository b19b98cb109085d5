"""`flywheel deploy [--dry-run]`, `flywheel undeploy`, `flywheel crds download`.

deploy --dry-run renders every values profile (bundled and external datastores) and runs
every offline check (flywheel.deploy.checks), printing a pass/fail table; it needs no
cluster and exits non-zero when a check fails. deploy (for real) runs the same checks for
its profile, installs the prerequisites when their CRDs are missing (infra/prereqs), runs
`helm upgrade --install` through helm-python-sdk (no helm binary) against KUBECONFIG, and
uploads the compiled pipelines (`flywheel loop submit --upload-only`) when a Kubeflow
Pipelines endpoint is set (FLYWHEEL_KFP_HOST).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flywheel.deploy.render import CHART_DIR, NAMESPACE, RELEASE, ROOT, DeployError, profiles
from flywheel.errors import FlywheelError
from flywheel.settings import get_settings

console = Console()

PREREQ_SCRIPT = ROOT / "infra" / "prereqs" / "install.sh"
PREREQ_CRDS = [
    "certificates.cert-manager.io",
    "inferenceservices.serving.kserve.io",
    "trainjobs.trainer.kubeflow.org",
    "scheduledworkflows.kubeflow.org",  # Kubeflow Pipelines
]
STYLE = {"pass": "green", "fail": "red", "skip": "yellow"}


class CRDDownloadError(FlywheelError):
    """A pinned upstream CRD file could not be fetched."""


def print_checks(results) -> None:
    table = Table("variant", "check", "result", "detail", show_lines=False)
    for r in results:
        table.add_row(r.variant, r.name, f"[{STYLE[r.status]}]{r.status}[/]", r.detail)
    console.print(table)
    failed = [r for r in results if not r.ok]
    skipped = [r for r in results if r.status == "skip"]
    console.print(
        f"{len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed, "
        f"{len(skipped)} skipped"
    )


def image_values(image: str | None) -> dict:
    """`repo[:tag][@sha256:...]` -> global.image values (a registry port is not a tag; a
    digest, as `make deploy` passes the one it just pushed, pins the exact image)."""
    if not image:
        return {}
    image, _, digest = image.partition("@")
    repo, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = image, "latest"
    values = {"repository": repo, "tag": tag}
    if digest:
        values["digest"] = digest
    return {"global": {"image": values}}


def deploy(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and check offline only.")
    ] = False,
    profile: Annotated[str, typer.Option("--profile", "-p", help="values-<profile>.yaml")] = "dev",
    image: Annotated[
        str | None, typer.Option(help="Platform image (default FLYWHEEL_IMAGE).")
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = NAMESPACE,
    release: Annotated[str, typer.Option(help="Helm release name.")] = RELEASE,
) -> None:
    """Install flywheel on the cluster in KUBECONFIG (--dry-run: render and check offline)."""
    from flywheel.deploy import checks
    from flywheel.deploy.render import ValuesError, profile_values

    settings = get_settings()
    if profile not in profiles():
        raise ValuesError(f"unknown profile {profile!r}; known profiles: {', '.join(profiles())}")
    if dry_run:
        with console.status("rendering every profile and running the offline checks..."):
            results = checks.run_all(settings.crds_dir)
        print_checks(results)
        if not all(r.ok for r in results):
            raise DeployError("offline checks failed (see the table above)" + _crds_hint(results))
        return

    overrides = image_values(image or getattr(settings, "image", None))
    with console.status(f"checking profile {profile} offline..."):
        results = checks.check_variant(profile, profile, overrides, settings.crds_dir)
    print_checks(results)
    if not all(r.ok for r in results):
        raise DeployError("offline checks failed; nothing was installed" + _crds_hint(results))
    ensure_prerequisites()
    values = profile_values(profile, overrides)
    helm_install(values, release, namespace)
    upload_pipelines(settings)
    console.print(
        f"[green]deployed[/] release {release} in namespace {namespace} "
        "(helm test passed); reach the UIs as the release notes say"
    )


def _crds_hint(results) -> str:
    missing = [r.detail for r in results if r.status == "fail" and "make crds" in r.detail]
    return f"; {missing[0]}" if missing else ""


def _kube_config(namespace: str | None = None):
    import helm_python as helm

    return helm.Config(namespace=namespace)


def ensure_prerequisites() -> None:
    """Install cert-manager, KServe, Kubeflow Pipelines and Trainer when their CRDs are absent."""
    missing = missing_crds()
    if not missing:
        console.print("prerequisites: present")
        return
    console.print(f"prerequisites missing ({', '.join(missing)}): running {PREREQ_SCRIPT}")
    proc = subprocess.run(["bash", str(PREREQ_SCRIPT)], check=False)
    if proc.returncode != 0:
        raise DeployError(f"{PREREQ_SCRIPT} failed (exit {proc.returncode}); see its output above")


def missing_crds() -> list[str]:
    try:
        from kubernetes import client, config

        config.load_kube_config()
        names = {
            c.metadata.name
            for c in client.ApiextensionsV1Api().list_custom_resource_definition().items
        }
    except Exception as exc:  # noqa: BLE001 - no kubeconfig, unreachable API server
        raise DeployError(
            f"cannot reach the cluster in KUBECONFIG: {' '.join(str(exc).split())}"
        ) from None
    return [name for name in PREREQ_CRDS if name not in names]


def helm_install(values: dict, release: str, namespace: str) -> None:
    """`helm upgrade --install`: upgrade the release, or install it when it does not exist."""
    import helm_python as helm

    with _kube_config(namespace) as cfg, console.status(f"helm upgrade --install {release}..."):
        try:
            try:
                cfg.upgrade(
                    str(CHART_DIR),
                    release,
                    values,
                    namespace=namespace,
                    wait="watcher",
                    timeout=900,
                    rollback_on_failure=True,
                )
            except helm.HelmNotFoundError:
                cfg.install(
                    str(CHART_DIR),
                    release,
                    values,
                    namespace=namespace,
                    create_namespace=True,
                    wait="watcher",
                    timeout=900,
                    rollback_on_failure=True,
                )
            cfg.test(release, timeout=300)
        except helm.HelmError as exc:
            raise DeployError(f"helm: {' '.join(str(exc).split())}") from None


def upload_pipelines(settings) -> None:
    """Upload the compiled pipelines with `flywheel loop submit --upload-only` (it owns kfp)."""
    kfp_host = getattr(settings, "kfp_host", None)
    if not kfp_host:
        console.print(
            "[yellow]pipelines not uploaded[/]: set FLYWHEEL_KFP_HOST (e.g. "
            "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8888:80` and "
            "FLYWHEEL_KFP_HOST=http://127.0.0.1:8888), then rerun"
        )
        return
    cmd = [str(Path(sys.executable).parent / "flywheel"), "loop", "submit", "--upload-only"]
    proc = subprocess.run(cmd, env={**os.environ, "FLYWHEEL_KFP_HOST": kfp_host}, check=False)
    if proc.returncode != 0:
        raise DeployError(
            f"uploading the pipelines failed ({' '.join(cmd)} exit {proc.returncode})"
        )


def undeploy(
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = NAMESPACE,
    release: Annotated[str, typer.Option(help="Helm release name.")] = RELEASE,
) -> None:
    """Remove the flywheel release (PersistentVolumeClaims of the datastores are kept)."""
    import helm_python as helm

    with _kube_config(namespace) as cfg:
        try:
            cfg.uninstall(release, ignore_not_found=True, wait="watcher", timeout=600)
        except helm.HelmError as exc:
            raise DeployError(f"helm uninstall {release}: {' '.join(str(exc).split())}") from None
    console.print(f"removed release {release} from {namespace}")


crds_app = typer.Typer(
    help="Upstream CRDs used to validate custom resources offline.", no_args_is_help=True
)


GITHUB_RAW = "https://raw.githubusercontent.com"


def crd_url(project: str, version: str, path: str, base_url: str = GITHUB_RAW) -> str:
    return f"{base_url}/{project}/{version}/{path}"


@crds_app.command("download")
def download(
    timeout: Annotated[float, typer.Option(help="Seconds per file.")] = 30.0,
) -> None:
    """Fetch the pinned upstream CRD files (flywheel.crds.CRD_SOURCES) into FLYWHEEL_CRDS_DIR."""
    download_crds(get_settings().crds_dir, timeout)


def download_crds(target: Path, timeout: float = 30.0, base_url: str = GITHUB_RAW) -> list[Path]:
    """Write each pinned CRD file into `target` (atomically); CRDDownloadError on failure."""
    import hashlib

    import httpx
    import yaml

    from flywheel.crds import CRD_SHA256, CRD_SOURCES

    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (project, version, path) in CRD_SOURCES.items():
        url = crd_url(project, version, path, base_url)
        try:
            resp = httpx.get(url, timeout=timeout, follow_redirects=True)
            resp.raise_for_status()
            doc = yaml.safe_load(resp.text)
        except (httpx.HTTPError, yaml.YAMLError) as exc:
            raise CRDDownloadError(
                f"could not fetch {url}: {' '.join(str(exc).split()) or type(exc).__name__}; "
                f"check the network, or copy the files into {target} (FLYWHEEL_CRDS_DIR)"
            ) from None
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            raise CRDDownloadError(f"{url} is not a CustomResourceDefinition")
        digest = hashlib.sha256(resp.content).hexdigest()
        if digest != CRD_SHA256[name]:
            raise CRDDownloadError(
                f"{url} has sha256 {digest}, not the pinned {CRD_SHA256[name]}: refusing it"
            )
        tmp = target / f".{name}.part"
        tmp.write_text(resp.text)
        tmp.replace(target / name)
        written.append(target / name)
        console.print(f"  {name}  <- {project} {version}")
    return written


def restore(
    backup: Annotated[
        str | None, typer.Option("--backup", help="Backup stamp (default: the newest).")
    ] = None,
    database: Annotated[
        list[str] | None, typer.Option("--database", help="Only these databases.")
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List the backups and stop.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Replace the databases' contents.")] = False,
) -> None:
    """Restore a Postgres backup from the object store (see flywheel.deploy.backup)."""
    from flywheel.deploy import backup as backups

    found = backups.backups()
    if list_only:
        for b in found:
            sizes = ", ".join(f"{d} {v['size']} B" for d, v in sorted(b.databases.items()))
            console.print(f"{b.stamp}  {sizes}")
        if not found:
            console.print("no finished backups")
        return
    if not yes:
        raise DeployError(
            "restore replaces the databases' current contents; run again with --yes "
            "(see the backups with --list)"
        )
    done = backups.restore(
        backup, database or None, on_step=lambda d: console.print(f"restoring {d} ...")
    )
    console.print(f"[green]restored[/] backup {done.stamp}: {', '.join(sorted(done.databases))}")
