"""The cluster contract, checked offline against the rendered chart and compiled pipelines:

- every flywheel workload of every values profile gets its settings only by reference, and
  that environment builds a valid cluster Settings whose every URL names a rendered Service
  and port; so does every compiled pipeline task, resolved in the namespace it runs in;
- the compiled YAML carries nothing of the machine that compiled it;
- names (image, ConfigMap, Secret, InferenceService, TrainingRuntime, Services) agree
  between charts, pipelines and code.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from flywheel import names
from flywheel.deploy import checks
from flywheel.deploy.env import config_map, container_env, secret, task_env
from flywheel.deploy.render import NAMESPACE
from flywheel.settings import Settings
from tests.cluster.conftest import COMPILER_ENV

URL_FIELDS = ("mlflow_tracking_uri", "label_studio_url", "trigger_url", "feast_s3_endpoint")
PIPELINE_NAMESPACE = "kubeflow"  # where Kubeflow Pipelines runs the tasks (secretNamespaces)


def flywheel_containers(rendered) -> list[tuple[str, dict]]:
    """(where, container) for every container that runs flywheel code (the platform image),
    helm test hooks left out."""
    out = []
    for obj in rendered.objects:
        if "helm.sh/hook" in (obj["metadata"].get("annotations") or {}):
            continue
        for where, pod in checks.pod_specs(obj):
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                if str(c.get("image", "")).startswith(names.IMAGE_REPOSITORY):
                    out.append((f"{where}/{c['name']}", c))
    return out


def services(rendered) -> dict[str, set[int]]:
    """host names a pod can use for each rendered Service -> its ports."""
    out = {}
    for svc in rendered.of_kind("Service"):
        name, ports = svc["metadata"]["name"], {p["port"] for p in svc["spec"]["ports"]}
        for host in (name, f"{name}.{NAMESPACE}.svc.cluster.local", f"{name}.{NAMESPACE}.svc"):
            out[host] = ports
    return out


def url_problems(settings: Settings, rendered, where: str) -> list[str]:
    known = services(rendered)
    problems = []
    targets = {f: getattr(settings, f) for f in URL_FIELDS}
    if settings.feast_registry_url:  # identities that use Feast (not training)
        registry = urlsplit(settings.feast_registry_url)
        targets["feast_registry_url"] = f"//{registry.hostname}:{registry.port}"
        targets["feast_redis_url"] = "//" + settings.feast_redis_url.split(",")[0]
    for field, url in targets.items():
        parts = urlsplit(url or "")
        if parts.hostname not in known or parts.port not in known[parts.hostname]:
            problems.append(f"{where}: {field}={url!r} names no rendered Service and port")
    return problems


# --- chart workloads ----------


def test_every_workload_takes_settings_by_reference_and_builds_cluster_settings(
    rendered, pod_settings
):
    workloads = flywheel_containers(rendered)
    runs = {w.split("/")[1] for w, c in workloads if c.get("envFrom")}
    # the trigger, the Feast server and materialize job, both model servers, training
    expected = {
        "trigger",
        "feast",
        "feast-materialize",
        "flywheel.predictor",
        "flywheel.transformer",
    }
    assert expected | {"flywheel-torch.node"} <= runs, runs
    identities = checks.mlflow_identities(rendered)
    workload_secrets = {names.identity_secret(i) for i in identities} - {names.SECRET}
    ls_token = secret(rendered, "flywheel-label-studio")["token"]
    problems = []
    for where, c in workloads:
        if "mlflow" in where:  # the MLflow server: a datastore service, not a flywheel process
            continue
        if where.startswith("CronJob/db-backup/"):  # the backup: superuser + S3, nothing else
            continue
        refs = [next(iter(ref.values()))["name"] for ref in c.get("envFrom", [])]
        # the platform ConfigMap and its own identity's Secret (never the pipeline's)
        if refs[:1] != [names.CONFIG_MAP] or len(refs) != 2 or refs[1] not in workload_secrets:
            problems.append(f"{where}: envFrom {refs}, not the ConfigMap and an identity Secret")
        literal = [e["name"] for e in c.get("env", []) if e["name"].startswith("FLYWHEEL_")]
        if set(literal) - {"FLYWHEEL_HOME"}:  # a pod's own volume path is its own
            problems.append(f"{where}: settings given literally: {literal}")
        env = container_env(rendered, c)
        settings = pod_settings(env)
        assert settings.mode == "cluster", where
        assert settings.namespace == NAMESPACE and settings.image == names.IMAGE, where
        assert env.get("FLYWHEEL_LABEL_STUDIO_TOKEN", ls_token) == ls_token, where
        problems += url_problems(settings, rendered, where)
    assert not problems, "\n".join(problems)


def test_platform_config_map_and_secret_hold_exactly_the_named_keys(rendered):
    for ns in (NAMESPACE, PIPELINE_NAMESPACE):
        assert set(config_map(rendered, names.CONFIG_MAP, ns)) == set(names.CONFIG_KEYS)
        assert set(secret(rendered, names.SECRET, ns)) == set(names.SECRET_KEYS)
    # the same values in both namespaces (the copy in kubeflow is for the pipeline tasks);
    # the pipeline identity's own MLflow login, not the admin
    assert secret(rendered, names.SECRET)["MLFLOW_TRACKING_USERNAME"] == "flywheel-pipeline"
    assert secret(rendered, names.SECRET, NAMESPACE) == secret(
        rendered, names.SECRET, PIPELINE_NAMESPACE
    )
    data = config_map(rendered, names.CONFIG_MAP)
    assert not set(data.values()) & set(secret(rendered, names.SECRET).values())


# --- compiled pipelines ----------


def test_every_compiled_task_takes_config_by_reference(compiled, rendered, pod_settings):
    for name, (_, spec, platform) in compiled.items():
        executors = spec["deploymentSpec"]["executors"]
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert set(k8s) == set(executors), f"{name}: tasks without a platform spec"
        for exec_name, executor in executors.items():
            container = executor["container"]
            assert container["image"] == names.IMAGE, exec_name
            assert not container.get("env"), f"{exec_name} has literal env {container['env']}"
            spec_k8s = k8s[exec_name]
            [cm] = spec_k8s["configMapAsEnv"]
            [sec] = spec_k8s["secretAsEnv"]
            assert cm["configMapName"] == names.CONFIG_MAP and sec["secretName"] == names.SECRET
            assert {p["configMapKey"] for p in cm["keyToEnv"]} == set(names.CONFIG_KEYS)
            assert {p["secretKey"] for p in sec["keyToEnv"]} == set(names.SECRET_KEYS)
            env = task_env(rendered, spec_k8s, PIPELINE_NAMESPACE)
            settings = pod_settings(env)
            assert settings.mode == "cluster"
            problems = url_problems(settings, rendered, f"{name}/{exec_name}")
            assert not problems, problems


def test_compiled_yaml_carries_nothing_of_the_compiling_machine(compiled):
    for name, (text, _, _) in compiled.items():
        assert "127.0.0.1" not in text and "localhost" not in text, name
        assert "FLYWHEEL_MODE=local" not in text and "value: local" not in text, name
        for key, value in COMPILER_ENV.items():
            if len(value) > 5:  # the strings, not single digits
                assert value not in text, f"{name} carries {key}={value}"
        # the pipeline's defaults defer to the settings where the task runs
        params = spec_params(compiled[name][1])
        assert params.get("labels_per_turn", {}).get("defaultValue") in (0, 0.0, None), params
        assert params.get("strategy", {}).get("defaultValue") in ("", None), params


def spec_params(spec: dict) -> dict:
    return spec["root"].get("inputDefinitions", {}).get("parameters", {})


# --- one source of names ----------


def test_names_agree_between_chart_pipelines_and_code(rendered, compiled):
    image = rendered.values.get("global", {}).get("image") or {}
    chart_defaults = rendered.get("ConfigMap", names.CONFIG_MAP)["data"]
    assert chart_defaults["FLYWHEEL_IMAGE"] == names.IMAGE == Settings.model_fields["image"].default
    assert not image or image.get("repository", names.IMAGE_REPOSITORY) == names.IMAGE_REPOSITORY
    assert rendered.get("InferenceService", names.INFERENCE_SERVICE)
    runtime = rendered.get("TrainingRuntime", names.TRAINING_RUNTIME)
    assert chart_defaults["FLYWHEEL_TRAINING_RUNTIME"] == runtime["metadata"]["name"]
    assert Settings.model_fields["training_runtime"].default == names.TRAINING_RUNTIME
    assert rendered.get("Role", names.ROLE) and rendered.get("RoleBinding", names.ROLE)
    rendered_services = {
        s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
        for s in rendered.of_kind("Service")
    }
    for service, port in names.SERVICES.items():
        assert port in rendered_services.get(service, set()), (service, port)
    for _, spec, _ in compiled.values():
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {names.IMAGE}


def test_image_digest_reaches_every_pod_and_the_settings(pod_settings):
    from flywheel.deploy.render import render

    digest = "sha256:" + "ab" * 32
    r = render("dev", {"global": {"image": {"digest": digest}}})
    ref = f"{names.IMAGE_REPOSITORY}@{digest}"
    assert r.get("ConfigMap", names.CONFIG_MAP)["data"]["FLYWHEEL_IMAGE"] == ref
    for where, c in flywheel_containers(r):
        assert c["image"] == ref, where
    assert pod_settings(config_map(r, names.CONFIG_MAP)).image == ref


@pytest.mark.parametrize("digest", ["latest", "sha256:abc"])
def test_a_bad_digest_is_refused(digest):
    from flywheel.deploy.render import ValuesError, render

    with pytest.raises(ValuesError, match="digest"):
        render("dev", {"global": {"image": {"digest": digest}}})


def test_the_url_check_catches_a_wrong_port_or_service(pod_settings):
    from flywheel.deploy.render import render

    r = render("dev")
    env = config_map(r, names.CONFIG_MAP) | secret(r, names.SECRET)
    assert not url_problems(pod_settings(env), r, "ok")
    env["FLYWHEEL_MLFLOW_TRACKING_URI"] = "http://mlflow.flywheel.svc.cluster.local:5001"
    env["FLYWHEEL_LABEL_STUDIO_URL"] = "http://labelstudio.flywheel.svc.cluster.local:8080"
    problems = url_problems(pod_settings(env), r, "bad")
    assert len(problems) == 2 and "mlflow_tracking_uri" in problems[0]
