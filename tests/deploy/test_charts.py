"""Offline checks of the Helm charts: every profile rendered by Helm's engine, linted,
schema-validated (core kinds and CRDs) and held to the security defaults; bad values fail
with Helm's schema error. Each profile is rendered once per module."""

from __future__ import annotations

import copy

import pytest

from flywheel import names
from flywheel.deploy import checks
from flywheel.deploy.env import container_env, secret
from flywheel.deploy.render import ValuesError, profile_values, profiles, render
from flywheel.settings import load

CRDS_DIR = load().crds_dir
NEED_CRDS = pytest.mark.skipif(
    not any(CRDS_DIR.glob("*.yaml")),
    reason=f"no upstream CRDs in {CRDS_DIR}: run `make crds` (or set FLYWHEEL_CRDS_DIR)",
)


@pytest.fixture(scope="module")
def dev():
    return render("dev")


@pytest.fixture(scope="module")
def gpu():
    return render("gpu", {"training": {"job": {"enabled": True}}})


@pytest.fixture(scope="module")
def external():
    return render("dev", checks.EXTERNAL_DATASTORES)


@pytest.fixture(scope="module")
def results():
    return checks.run_all(CRDS_DIR)


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def containers(rendered, kind: str, name: str) -> list[dict]:
    obj = rendered.get(kind, name)
    return [c for _, pod in checks.pod_specs(obj) for c in pod["containers"]]


# --- every profile passes every offline check ----------


def test_profiles():
    assert profiles() == ["dev", "gpu"]


@pytest.mark.parametrize("variant", list(checks.VARIANTS))
def test_variant_passes_every_check(results, variant):
    mine = [r for r in results if r.variant == variant]
    assert {r.name for r in mine} >= {
        "render",
        "helm lint",
        "security defaults",
        "generated secrets",
    }
    failed = [f"{r.name}: {r.detail}" for r in mine if not r.ok]
    assert not failed, failed


@NEED_CRDS
def test_custom_resources_validated_against_crds(results):
    crd = [r for r in results if r.name == "custom resources vs CRDs"]
    assert crd and all(r.status == "pass" for r in crd), crd
    assert any("TrainJob/flywheel-train" in r.detail for r in crd)
    assert all("InferenceService/flywheel" in r.detail for r in crd)


def test_core_kinds_validated_at_stated_version(results):
    core = [r for r in results if r.name.startswith("kubernetes-validate")]
    assert len(core) == len(checks.VARIANTS)
    assert all(checks.KUBE_VERSION in r.name and r.status == "pass" for r in core)


# --- what the services get ----------


def test_mlflow_auth_postgres_s3_allowed_hosts(dev):
    (c,) = containers(dev, "Deployment", "mlflow")
    script = c["command"][-1]
    assert "--app-name basic-auth" in script
    assert "postgresql+psycopg://${PGUSER}:${PGPASSWORD}@${PGHOST}" in script
    assert '--artifacts-destination "s3://${FLYWHEEL_S3_BUCKET}/mlflow" --serve-artifacts' in script
    assert "mlflow.flywheel.svc.cluster.local:5000" in script
    env = env_of(c)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == {
        "secretKeyRef": {"name": "flywheel-mlflow-auth", "key": "password"}
    }


def test_label_studio_postgres_pvc_token_and_webhooks(dev):
    (c,) = containers(dev, "Deployment", "label-studio")
    env = env_of(c)
    assert c["image"] == "heartexlabs/label-studio:1.23.2"
    assert env["DJANGO_DB"] == "default" and env["POSTGRE_HOST"] == "postgres"
    assert env["LABEL_STUDIO_USER_TOKEN"]["secretKeyRef"]["name"] == "flywheel-label-studio"
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    banned = env["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert "10.0.0.0/8" not in banned and "169.254.0.0/16" in banned
    pod = dev.get("Deployment", "label-studio")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False  # LABEL_STUDIO_PORT=tcp://... would break it
    assert dev.get("PersistentVolumeClaim", "label-studio-data")
    trigger_policy = dev.get("NetworkPolicy", "trigger")
    allowed = trigger_policy["spec"]["ingress"][0]["from"][0]["podSelector"]
    assert allowed["matchExpressions"][0]["values"] == ["label-studio", "trigger-test"]


def test_feast_server_and_materialization(dev):
    (c,) = containers(dev, "Deployment", "feast")
    assert c["command"][:2] == ["feast", "serve"]
    env = container_env(dev, c)
    assert env["FEAST_FS_YAML_FILE_PATH"].endswith("feature_store.cluster.yaml")
    password = secret(dev, names.POSTGRES_ROLES)["feast"]  # its own role, not the superuser
    assert env["FLYWHEEL_FEAST_REGISTRY_URL"] == (
        f"postgresql+psycopg://flywheel_feast:{password}"
        "@postgres.flywheel.svc.cluster.local:5432/feast"
    )
    assert env["FLYWHEEL_FEAST_OFFLINE_URI"].startswith("s3://")
    cron = dev.get("CronJob", "feast-materialize")
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["flywheel", "features", "materialize"]


def test_serving_inference_service(dev):
    isvc = dev.get("InferenceService", "flywheel")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    pred, trans = isvc["spec"]["predictor"], isvc["spec"]["transformer"]
    assert pred["containers"][0]["command"] == ["python", "-m", "flywheel.serving.predictor"]
    assert trans["containers"][0]["command"] == ["python", "-m", "flywheel.serving.transformer"]
    assert "--model_name" in pred["containers"][0]["args"]
    assert "canaryTrafficPercent" not in pred
    canary = render("dev", {"serving": {"canaryTrafficPercent": 10}})
    assert (
        canary.get("InferenceService", "flywheel")["spec"]["predictor"]["canaryTrafficPercent"]
        == 10
    )


def test_every_service_has_a_helm_test(dev):
    tests = {
        p["metadata"]["name"]
        for p in dev.of_kind("Pod")
        if p["metadata"]["annotations"].get("helm.sh/hook") == "test"
    }
    assert tests == {
        "postgres-test",
        "redis-test",
        "seaweedfs-test",
        "mlflow-test",
        "label-studio-test",
        "feast-test",
        "serving-test",
        "trigger-test",
    }


# --- GPU ----------


def test_gpu_profile_schedules_training_and_predictor_on_gpus(gpu):
    (node,) = containers(gpu, "TrainingRuntime", "flywheel-torch")
    assert node["resources"]["limits"]["nvidia.com/gpu"] == 1
    runtime = gpu.get("TrainingRuntime", "flywheel-torch")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"][
        "spec"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    job = gpu.get("TrainJob", "flywheel-train")
    assert job["spec"]["trainer"]["numNodes"] == 2
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 1
    pred = gpu.get("InferenceService", "flywheel")["spec"]["predictor"]
    assert pred["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pred["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_dev_profile_asks_for_no_gpu(dev):
    text = "".join(dev.manifests.values())
    assert "nvidia.com/gpu:" not in text and "nodeSelector" not in text


# --- datastores: bundled and external ----------


def test_bundled_datastores(dev):
    assert {s["metadata"]["name"] for s in dev.of_kind("StatefulSet")} == {
        "postgres",
        "redis",
        "seaweedfs",
    }
    assert {s["metadata"]["name"] for s in dev.of_kind("Secret")} == {
        "flywheel-postgres",
        "flywheel-redis",
        "flywheel-s3",
        "flywheel-mlflow-auth",
        "flywheel-label-studio",
        "flywheel-mlflow-users",
        "flywheel-postgres-roles",
        "flywheel-pipeline",
        "flywheel-seaweedfs-config",
        "flywheel-reader",  # the identities' Secrets (envFrom)
        "flywheel-serving",
        "flywheel-training",
    }


def test_external_datastores(external):
    assert not external.of_kind("StatefulSet")
    assert {s["metadata"]["name"] for s in external.of_kind("Secret")} == {
        "flywheel-mlflow-auth",
        "flywheel-label-studio",
        "flywheel-mlflow-users",
        "flywheel-postgres-roles",  # the services' own roles, made by db-init as the admin
        "flywheel-pipeline",
        "flywheel-reader",  # the identities' Secrets (envFrom)
        "flywheel-serving",
        "flywheel-training",
    }
    (c,) = containers(external, "Deployment", "mlflow")
    env = env_of(c)
    assert env["PGHOST"] == "postgres.db.example.internal"
    assert env["PGUSER"] == "flywheel_mlflow"
    assert env["PGPASSWORD"]["secretKeyRef"] == {"name": "flywheel-postgres-roles", "key": "mlflow"}
    (init,) = containers(external, "Job", "db-init")
    assert env_of(init)["PGPASSWORD"]["secretKeyRef"]["name"] == "external-postgres"
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example.internal"
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "external-s3"
    (f,) = containers(external, "Deployment", "feast")
    redis_url = container_env(external, f)["FLYWHEEL_FEAST_REDIS_URL"]
    assert redis_url.startswith("redis.db.example.internal:6379,password=")


# --- secrets ----------


def test_secrets_generated_not_fixed(dev):
    again = render("dev")
    first, second = checks.secret_values(dev), checks.secret_values(again)
    assert first.keys() == second.keys() and len(first) == 20 + 18  # + identities' Secrets
    # one value per key; only the pipeline Secret is also in kubeflow, with the same values
    copies = checks.secret_copies(dev)
    assert all(len(set(v)) == 1 for v in copies.values()), copies.keys()
    assert {k for k, v in copies.items() if len(v) == 2} == {
        f"{names.SECRET}/{key}" for key in names.SECRET_KEYS
    }
    for key, value in first.items():
        assert len(value) >= 20 and value.lower() not in checks.WEAK_SECRETS, key
        assert second[key] != value, f"{key} is fixed"
    assert 6 <= len(first["flywheel-label-studio/token"]) <= 40
    text = "\n".join(dev.manifests.values()).lower()
    for weak in ("minioadmin", "minio123", "changeme", "password: admin"):
        assert weak not in text


def test_secrets_kept_on_upgrade_through_lookup():
    # Offline `lookup` is empty; the template must read the live Secret when there is one.
    from flywheel.deploy.render import CHART_DIR

    helpers = (CHART_DIR / "charts/lib/templates/_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret"' in helpers and "randAlphaNum" in helpers


# --- bad values fail with Helm's schema error ----------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mlflow": {"replicas": -1}}, "/replicas': minimum"),
        ({"serving": {"predictor": {"minReplicas": -2}}}, "minReplicas"),
        ({"training": {"gpusPerNode": -1}}, "gpusPerNode"),
        ({"profile": "prod"}, "/profile': value must be one of"),
        ({"serving": {"canaryTrafficPercent": 150}}, "canaryTrafficPercent"),
        ({"postgres": {"enabled": False}}, "existingSecret"),
        (
            {
                "minio": {"enabled": False},
                "seaweedfs": {"enabled": False},
                "global": {"s3": {"endpoint": "https://s3.example"}},
            },
            "existingSecret",
        ),
    ],
)
def test_bad_values_fail_with_schema_error(overrides, message):
    with pytest.raises(ValuesError, match="values rejected by the chart schema") as info:
        render("dev", overrides)
    assert message in str(info.value)


def test_unknown_profile_is_named():
    with pytest.raises(ValuesError, match="unknown profile 'prod'; known profiles: dev, gpu"):
        profile_values("prod")


# --- the checks catch what they claim to catch ----------


def test_security_check_names_each_violation(dev):
    bad = copy.deepcopy(dev)
    pod = bad.get("Deployment", "mlflow")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    del c["resources"]["limits"]
    c["securityContext"].update(
        allowPrivilegeEscalation=True,
        readOnlyRootFilesystem=False,
        runAsNonRoot=False,
        capabilities={},
    )
    pod["securityContext"]["runAsNonRoot"] = False
    bad.documents = [
        (s, o)
        for s, o in bad.documents
        if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "redis")
    ]
    result = checks.security(bad, "bad")
    assert result.status == "fail"
    for words in (
        "mlflow/mlflow: no limits",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "capabilities",
        "root filesystem is writable",
        "Service/redis: no NetworkPolicy",
    ):
        assert words in result.detail


def test_secret_check_catches_fixed_and_literal_values(dev):
    assert checks.secrets(dev, dev, "same").status == "fail"  # same values twice: fixed
    bad = copy.deepcopy(dev)
    c = bad.get("Deployment", "trigger")["spec"]["template"]["spec"]["containers"][0]
    c["env"].append({"name": "DB_PASSWORD", "value": "hunter2"})
    result = checks.secrets(bad, render("dev"), "literal")
    assert result.status == "fail" and "DB_PASSWORD holds a literal value" in result.detail


def test_core_validation_catches_unknown_field(dev):
    bad = copy.deepcopy(dev)
    bad.get("Service", "mlflow")["spec"]["colour"] = "blue"
    result = checks.validate_core(bad, "bad")
    assert result.status == "fail" and "Service/mlflow" in result.detail


@NEED_CRDS
def test_crd_validation_catches_bad_custom_resource(dev):
    bad = copy.deepcopy(dev)
    bad.get("InferenceService", "flywheel")["spec"]["predictor"]["minReplicas"] = "many"
    result = checks.validate_custom(bad, "bad", CRDS_DIR)
    assert result.status == "fail" and "minReplicas" in result.detail


def test_crd_validation_fails_without_crds(dev, tmp_path):
    result = checks.validate_custom(dev, "dev", tmp_path / "none")
    assert result.status == "fail" and "make crds" in result.detail


def test_trigger_keeps_state_on_a_volume():
    r = render("dev", {"trigger": {"action": "pipelines.run:on_labels"}})
    (c,) = containers(r, "Deployment", "trigger")
    env = container_env(r, c)
    assert env["FLYWHEEL_HOME"] == "/data/flywheel"
    assert env["FLYWHEEL_TRIGGER_ACTION"] == "pipelines.run:on_labels"
    assert env["FLYWHEEL_TRIGGER_URL"] == "http://trigger.flywheel.svc.cluster.local:8090"
    assert r.get("PersistentVolumeClaim", "trigger-data")
    with pytest.raises(ValuesError, match="action"):
        render("dev", {"trigger": {"action": "not a function"}})
