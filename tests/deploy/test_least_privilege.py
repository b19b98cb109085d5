"""Least privilege in the charts (issue 12): the rendered manifests, and each new dry-run
check failing on a values file that breaks what it guards."""

from __future__ import annotations

import json

import pytest

from flywheel import names
from flywheel.deploy import checks
from flywheel.deploy.env import container_env, secret
from flywheel.deploy.render import render


@pytest.fixture(scope="module")
def dev():
    return render("dev")


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_new_checks_pass_on_the_shipped_profiles(dev):
    for check in (checks.perimeter, checks.credentials, checks.label_studio):
        result = check(dev, "dev")
        assert result.status == "pass", (result.name, result.detail)


def test_only_the_pipeline_secret_reaches_kubeflow(dev):
    kubeflow = [s for s in dev.of_kind("Secret") if s["metadata"]["namespace"] == "kubeflow"]
    assert [s["metadata"]["name"] for s in kubeflow] == ["flywheel-pipeline"]
    assert set(kubeflow[0]["data"]) == set(names.SECRET_KEYS)
    # the platform ConfigMap is copied too: it holds no secret value
    values_kf = set(secret(dev, names.SECRET, "kubeflow").values())
    assert not set(dev.get("ConfigMap", names.CONFIG_MAP)["data"].values()) & values_kf
    for sec in dev.of_kind("Secret"):
        assert sec["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    values = checks.secret_copies(dev)
    assert (
        values["flywheel-pipeline/FLYWHEEL_LABEL_STUDIO_TOKEN"][0]
        == (values["flywheel-label-studio/token"][0])
    )
    assert (
        values["flywheel-pipeline/MLFLOW_TRACKING_PASSWORD"][0]
        == (values["flywheel-mlflow-users/pipeline"][0])
    )
    # no superuser or admin credential, and the S3 keys are the bucket-scoped workload ones
    admin = [v[0] for k, v in values.items() if k.startswith(checks.ADMIN_KEYS)]
    pipeline = [v[0] for k, v in values.items() if k.startswith("flywheel-pipeline/")]
    assert not [a for a in admin for p in pipeline if len(a) >= 16 and a in p]
    assert values["flywheel-pipeline/AWS_ACCESS_KEY_ID"][0] == values["flywheel-s3/accessKey"][0]
    assert "flywheel_feast:" in values["flywheel-pipeline/FLYWHEEL_FEAST_REGISTRY_URL"][0]


def test_credentials_fail_when_minio_root_keys_would_reach_kubeflow():
    minio = render(
        "dev",
        {
            "minio": {"enabled": True},
            "seaweedfs": {"enabled": False},
            "global": {"s3": {"service": "minio"}},
        },
    )
    result = checks.credentials(minio, "minio")
    assert result.status == "fail" and "MinIO" in result.detail


def test_pipelines_read_only_the_pipeline_secret():
    from pipelines.flywheel import SECRET_ENV

    assert list(SECRET_ENV) == ["flywheel-pipeline"] == [names.SECRET]


def test_workloads_log_in_to_mlflow_as_themselves(dev):
    isvc = dev.get("InferenceService", "flywheel")
    users = secret(dev, names.MLFLOW_USERS)
    for part in ("predictor", "transformer"):
        c = isvc["spec"][part]["containers"][0]
        refs = [next(iter(ref.values()))["name"] for ref in c["envFrom"]]
        assert refs == [names.CONFIG_MAP, names.identity_secret("serving")]
        env = container_env(dev, c)
        assert env["MLFLOW_TRACKING_USERNAME"] == "flywheel-serving"
        assert env["MLFLOW_TRACKING_PASSWORD"] == users["serving"]
        assert "FLYWHEEL_LABEL_STUDIO_TOKEN" not in env
    assert checks.mlflow_identities(dev) == {
        "serving": "READ",
        "reader": "READ",
        "training": "EDIT",
        "pipeline": "MANAGE",
    }
    job = dev.get("Job", "mlflow-users")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_default_deny_and_named_peers(dev):
    deny = dev.get("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    trigger = dev.get("NetworkPolicy", "trigger-egress")["spec"]["egress"]
    peers = [
        (rule["to"][0].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name"))
        for rule in trigger
    ]
    assert peers[:2] == ["label-studio", "mlflow"] and len(peers) == 3  # + the KFP API
    mlflow_in = dev.get("NetworkPolicy", "mlflow")["spec"]["ingress"][0]["from"]
    pipeline = [p for p in mlflow_in if "namespaceSelector" in p]
    assert pipeline and all("podSelector" in p for p in pipeline)
    assert dev.get("NetworkPolicy", "serving-transformer")["spec"]["ingress"]
    isvc = dev.get("InferenceService", "flywheel")
    assert isvc["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"


def test_label_studio_env(dev):
    (c,) = [
        c
        for _, p in checks.pod_specs(dev.get("Deployment", "label-studio"))
        for c in p["containers"]
    ]
    env = env_of(c)
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert env["SSRF_PROTECTION_ENABLED"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == "/label-studio/data/items"
    assert "*" not in env["ALLOWED_HOSTS"].split(",")
    pvc = dev.get("PersistentVolumeClaim", "label-studio-data")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


# --- each new check fails on a bad values file ----------


@pytest.mark.parametrize(
    "check, overrides, message",
    [
        (checks.perimeter, {"global": {"networkPolicy": {"enabled": False}}}, "no perimeter"),
        (checks.perimeter, {"serving": {"visibility": "external"}}, "cluster-local"),
        (checks.credentials, {"global": {"mlflowIdentities": {"serving": "EDIT"}}}, "READ only"),
        (
            checks.credentials,
            {"global": {"mlflowIdentities": {"training": "MANAGE"}}},
            "one promoter",
        ),
        (checks.label_studio, {"labelstudio": {"extraAllowedHosts": ["*"]}}, "ALLOWED_HOSTS"),
    ],
)
def test_new_check_fails_on_bad_values(check, overrides, message):
    result = check(render("dev", overrides), "bad")
    assert result.status == "fail" and message in result.detail, (result.status, result.detail)


def test_credentials_check_catches_a_spilled_secret(dev):
    spilled = json.loads(json.dumps(dev.get("Secret", "flywheel-postgres")))
    spilled["metadata"]["namespace"] = "kubeflow"
    entry = ("spilled.yaml", spilled)
    dev.documents.append(entry)
    try:
        result = checks.credentials(dev, "bad")
    finally:
        dev.documents.remove(entry)
    assert result.status == "fail" and "copied to namespace kubeflow" in result.detail


def test_perimeter_check_catches_a_namespace_wide_peer(dev):
    policy = json.loads(json.dumps(dev.get("NetworkPolicy", "mlflow")))
    policy["metadata"]["name"] = "mlflow-wide"
    policy["spec"]["ingress"][0]["from"] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}
    ]
    entry = ("wide.yaml", policy)
    dev.documents.append(entry)
    try:
        result = checks.perimeter(dev, "bad")
    finally:
        dev.documents.remove(entry)
    assert result.status == "fail" and "admits a whole namespace" in result.detail


def test_images_by_digest(dev):
    unpinned = checks.images(dev, "dev")
    assert unpinned.status == "skip" and "heartexlabs/label-studio:1.23.2" in unpinned.detail
    strict = checks.images(render("dev", {"global": {"requireImageDigests": True}}), "bad")
    assert strict.status == "fail" and "not pinned by digest" in strict.detail
    digest = "sha256:" + "ab" * 32
    pinned = render(
        "dev",
        {
            "global": {"requireImageDigests": True, "image": {"digest": digest}},
            **{
                chart: {"image": {"digest": digest}}
                for chart in ("labelstudio", "postgres", "redis", "seaweedfs")
            },
        },
    )
    result = checks.images(pinned, "pinned")
    assert result.status == "pass", result.detail
    (c,) = [
        c for _, p in checks.pod_specs(pinned.get("Deployment", "mlflow")) for c in p["containers"]
    ]
    assert c["image"] == f"ghcr.io/flywheel-ml/flywheel@{digest}"


def test_a_malformed_digest_is_a_schema_error():
    from flywheel.deploy.render import ValuesError

    with pytest.raises(ValuesError, match="digest"):
        render("dev", {"postgres": {"image": {"digest": "latest"}}})


def test_kept_volume_without_its_secret_fails_the_install(tmp_path):
    """`lookup` finds nothing offline, so the helper the pre-install check calls is rendered
    here with what `lookup` returns on a cluster: a kept claim and no Secret."""
    import shutil

    from flywheel.deploy.render import CHART_DIR, DeployError, render_values

    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR / "charts" / "lib", chart / "charts" / "lib")
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\n"
        "dependencies:\n  - {name: lib, version: 0.1.0}\n"
    )
    (chart / "templates").mkdir()
    (chart / "templates" / "probe.yaml").write_text(
        '{{- $pvc := dict "metadata" (dict "name" "data-postgres-0") -}}\n'
        '{{- include "flywheel.keptVolumeCheck" (dict "pvc" $pvc "secret" .Values.secret '
        '"pvcName" "data-postgres-0" "secretName" "flywheel-postgres" "what" "Postgres data") }}\n'
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
    )
    kept = render_values({"secret": {"metadata": {"name": "flywheel-postgres"}}}, chart_dir=chart)
    assert kept.get("ConfigMap", "probe")  # claim and Secret both kept: installs
    with pytest.raises(
        DeployError, match="was kept from an earlier install, but Secret flywheel-postgres is gone"
    ):
        render_values({"secret": {}}, chart_dir=chart)
    assert "flywheel.keptVolumeCheck" in (CHART_DIR / "templates/preinstall-check.yaml").read_text()


def test_optional_ingress_behind_oauth2_proxy():
    off = render("dev")
    assert not off.of_kind("Ingress") and "oauth2-proxy" not in str(off.of_kind("Deployment"))
    on = render("dev", checks.INGRESS)
    ls = on.get("Ingress", "label-studio")
    notes = ls["metadata"]["annotations"]
    assert notes["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert notes["nginx.ingress.kubernetes.io/auth-url"].endswith("/oauth2/auth")
    assert ls["spec"]["tls"][0]["hosts"] == ["label.example.org"]
    for check in (checks.perimeter, checks.security, checks.validate_core):
        result = check(on, "dev+ingress")
        assert result.status == "pass", (result.name, result.detail)


def test_ingress_without_its_oidc_settings_is_a_schema_error():
    from flywheel.deploy.render import ValuesError

    with pytest.raises(ValuesError, match="oidcIssuerUrl|hosts"):
        render("dev", {"ingress": {"enabled": True}})
