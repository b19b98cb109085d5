"""`flywheel deploy --dry-run` (what `make deploy DRY_RUN=1` runs), bad input to the deploy
commands, and `flywheel crds download` against a real local HTTP server."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.crds import CRD_SOURCES
from flywheel.deploy import checks
from flywheel.deploy.cli import CRDDownloadError, download_crds, image_values, undeploy
from flywheel.deploy.render import CHART_DIR, DeployError
from flywheel.settings import load

CRDS_DIR = load().crds_dir


def test_dry_run_renders_every_profile_and_passes():
    result = CliRunner().invoke(app, ["deploy", "--dry-run"])
    assert result.exit_code == 0, result.output
    for variant in checks.VARIANTS:
        assert variant[:15] in result.output
    assert " 0 failed" in result.output


def test_dry_run_without_crds_fails_naming_make_crds(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CRDS_DIR", str(tmp_path / "no-crds"))
    from flywheel.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["deploy", "--dry-run", "--profile", "dev"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0, result.output
    assert "make crds" in str(result.exception)


def test_unknown_profile_exits_non_zero():
    result = CliRunner().invoke(app, ["deploy", "--profile", "prod"])
    assert result.exit_code != 0
    assert "unknown profile 'prod'" in str(result.exception)


def test_broken_chart_fails_the_checks(tmp_path):
    chart = tmp_path / "flywheel"
    shutil.copytree(CHART_DIR, chart)
    values = chart / "charts/trigger/templates/deployment.yaml"
    values.write_text(values.read_text().replace("readOnlyRootFilesystem", "# off"))
    tpl = chart / "charts/lib/templates/_helpers.tpl"
    tpl.write_text(
        tpl.read_text()
        .replace(
            "readOnlyRootFilesystem: {{",
            "privileged: false\nreadOnlyRootFilesystem: {{ false }}{{/*",
        )
        .replace("true{{ end }}", "true{{ end }}*/}}")
    )
    results = checks.run_all(CRDS_DIR, {"dev": ("dev", {})}, chart_dir=chart)
    failed = [r for r in results if not r.ok]
    assert [r.name for r in failed] == ["security defaults"]
    assert "root filesystem is writable" in failed[0].detail


def test_image_values():
    assert image_values("registry.local:5000/flywheel") == {
        "global": {"image": {"repository": "registry.local:5000/flywheel", "tag": "latest"}}
    }
    assert image_values("ghcr.io/x/flywheel:1.2")["global"]["image"]["tag"] == "1.2"
    assert image_values(None) == {}
    digest = "sha256:" + "0f" * 32
    assert image_values(f"ghcr.io/x/flywheel:1.2@{digest}")["global"]["image"] == {
        "repository": "ghcr.io/x/flywheel",
        "tag": "1.2",
        "digest": digest,
    }


def test_undeploy_without_a_cluster_is_a_clear_error(tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\nusers: [{name: x, user: {}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(DeployError, match="helm uninstall flywheel"):
        undeploy(namespace="flywheel", release="flywheel")


@pytest.fixture()
def crd_server(tmp_path):
    """A static HTTP server laid out like raw.githubusercontent.com/<project>/<version>/<path>."""
    if not all((CRDS_DIR / name).exists() for name in CRD_SOURCES):
        pytest.skip(f"no upstream CRDs in {CRDS_DIR}: run `make crds`")
    root = tmp_path / "www"
    for name, (project, version, path) in CRD_SOURCES.items():
        dest = root / project / version / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CRDS_DIR / name, dest)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_crds_download(crd_server, tmp_path):
    target = tmp_path / "crds"
    written = download_crds(target, timeout=10, base_url=crd_server)
    assert sorted(p.name for p in written) == sorted(CRD_SOURCES)
    for path in written:
        assert path.read_bytes() == (CRDS_DIR / path.name).read_bytes()
    assert not list(target.glob(".*.part"))


def test_crds_download_refuses_a_file_that_is_not_the_pinned_one(crd_server, tmp_path):
    project, version, path = CRD_SOURCES["trainer.kubeflow.org_trainjobs.yaml"]
    tampered = tmp_path / "www" / project / version / path
    tampered.write_text(tampered.read_text().replace("numNodes", "numNodez"))
    with pytest.raises(CRDDownloadError, match="not the pinned"):
        download_crds(tmp_path / "crds", timeout=10, base_url=crd_server)


def test_crds_download_failure_names_the_url(tmp_path):
    port = _closed_port()
    with pytest.raises(CRDDownloadError, match=f"could not fetch http://127.0.0.1:{port}/"):
        download_crds(tmp_path / "crds", timeout=5, base_url=f"http://127.0.0.1:{port}")
    assert not list((tmp_path / "crds").glob("*.yaml"))


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_readme_cluster_section_names_the_commands():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Cluster mode") :]
    for words in (
        "make deploy DRY_RUN=1",
        "make deploy",
        "make undeploy",
        "port-forward",
        "infra/prereqs",
        "values-gpu.yaml",
    ):
        assert words in section, words


def test_platform_image_dockerfile_is_pinned_and_non_root():
    root = Path(__file__).resolve().parents[2]
    lines = [
        line.strip()
        for line in (root / "infra/image/Dockerfile").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    base = next(line for line in lines if line.startswith("FROM "))
    assert ":" in base and "latest" not in base
    assert lines[-1].startswith("CMD [") and any(line == "USER 1000:1000" for line in lines)
    assert "ARG TORCH_VERSION=2.13.0" in lines
    assert any("download.pytorch.org/whl/cu" in line for line in lines)
    versions = (root / "infra/prereqs/versions.env").read_text()
    for pin in ("KSERVE_VERSION=v0.20.0", "TRAINER_VERSION=v2.3.0", "KFP_VERSION=2.14.3"):
        assert pin in versions  # the same releases as flywheel.crds.CRD_SOURCES
