"""The cluster paths through flywheel.kube: the TrainJob (platform image, the chart's
runtime, credentials by reference, GPUs from settings), the rollout of the chart's
InferenceService, the RBAC rules covering every API call the code makes, and the trigger
submitting one pipeline run at a time.

No Kubernetes API server can run on this machine (FACTS.md), so the API calls are recorded
at the kubernetes client boundary (`CustomObjectsApi`'s methods): `KubernetesCluster` runs
unchanged over `ApiRecorder`, which keeps objects in a dict and answers as the server
would (404 for a missing object, the dry run storing nothing).
"""

from __future__ import annotations

import copy

import pytest
from kubernetes.client import ApiException

from flywheel import kube, names
from flywheel.deploy.env import container_env, secret
from flywheel.deploy.render import NAMESPACE, render
from flywheel.errors import ServiceError, SettingsError
from flywheel.loop import rollout
from flywheel.settings import load
from flywheel.training.trainjob import build_trainjob, trainjob_done

METHOD_VERB = {
    "create_namespaced_custom_object": "create",
    "get_namespaced_custom_object": "get",
    "patch_namespaced_custom_object": "patch",
}


class ApiRecorder:
    """The CustomObjectsApi calls KubernetesCluster makes, recorded, with a dict as state.
    `on_get(obj)` lets a test play the controller (mark a job Complete, an ISVC Ready)."""

    def __init__(self, on_get=None):
        self.calls: list[tuple[str, str, str, dict]] = []  # (verb, group, plural, kwargs)
        self.objects: dict[tuple[str, str], dict] = {}
        self.on_get = on_get or (lambda obj: None)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kw):
        self.calls.append(("create", group, plural, kw))
        if kw.get("dry_run") != "All":
            self.objects[(plural, body["metadata"]["name"])] = copy.deepcopy(body)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", group, plural, {}))
        if (plural, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        obj = self.objects[(plural, name)]
        self.on_get(obj)
        return copy.deepcopy(obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append(("patch", group, plural, {}))
        if (plural, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        obj = self.objects[(plural, name)]
        _merge(obj, body)
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        return copy.deepcopy(obj)


def _merge(base: dict, patch: dict) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


@pytest.fixture(scope="module")
def dev():
    return render("dev")


def cluster_settings(tmp_path, **overrides):
    return load(home=tmp_path / "home", mode="cluster", namespace=NAMESPACE, **overrides)


# --- TrainJob ----------


def test_trainjob_has_platform_image_runtime_gpus_and_credentials_by_reference(tmp_path, dev):
    """(tests/training/test_trainjob.py validates TrainJobs against the upstream CRD.)"""
    digest_image = f"{names.IMAGE_REPOSITORY}@sha256:{'0f' * 32}"
    s = cluster_settings(tmp_path, image=digest_image, train_gpus=2, train_num_nodes=3)
    job = build_trainjob(s, name="turn-9", frame="s3://flywheel/state/t.parquet")
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == digest_image
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 2
    assert "resourcesPerNode" not in trainer  # the hardened runtime's resources apply
    assert trainer["command"] == ["torchrun", "-m", "flywheel.training"]
    # nothing of the building machine: only the job's own name
    assert trainer["env"] == [{"name": "FLYWHEEL_TRAINJOB", "value": "turn-9"}]
    # the runtime it names is the chart's hardened one, whose pods get every setting and
    # the MLflow credentials by reference
    ref = job["spec"]["runtimeRef"]
    runtime = dev.get(ref["kind"], ref["name"])  # (validated against its CRD by deploy checks)
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
    (node,) = pod["template"]["spec"]["containers"]
    assert node["securityContext"]["runAsNonRoot"] and "limits" in node["resources"]
    env = container_env(dev, node)
    # the runtime's GPUs and the settings' FLYWHEEL_TRAIN_GPUS / NUM_NODES agree, per profile
    for profile in ("dev", "gpu"):
        r = dev if profile == "dev" else render(profile)
        rt = r.get("TrainingRuntime", names.TRAINING_RUNTIME)
        spec = rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
        limits = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
        data = r.get("ConfigMap", names.CONFIG_MAP)["data"]
        assert str(limits.get(data["FLYWHEEL_TRAIN_ACCELERATOR"], 0)) == data["FLYWHEEL_TRAIN_GPUS"]
        assert str(rt["spec"]["mlPolicy"]["numNodes"]) == data["FLYWHEEL_TRAIN_NUM_NODES"]
    # its own identity (EDIT), not the pipeline's or the admin: the S3 keys for state
    assert env["MLFLOW_TRACKING_PASSWORD"] == secret(dev, names.MLFLOW_USERS)["training"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "flywheel-training"
    assert env["FLYWHEEL_MODE"] == "cluster" and env["AWS_ACCESS_KEY_ID"]
    assert env["FLYWHEEL_MLFLOW_TRACKING_URI"].startswith("http://mlflow.")


def test_trainjob_created_with_a_dry_run_first_and_waited_for(tmp_path):
    def complete(obj):
        obj["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    api = ApiRecorder(on_get=complete)
    cluster = kube.KubernetesCluster(NAMESPACE, api=api, poll_s=0)
    job = build_trainjob(cluster_settings(tmp_path), name="t1", frame="s3://b/t.parquet")
    cluster.create(job)
    assert [c[0] for c in api.calls] == ["create", "create"]
    assert api.calls[0][3] == {"dry_run": "All"} and api.calls[1][3] == {}
    done = cluster.wait("TrainJob", "t1", trainjob_done, timeout_s=5)
    assert done["status"]["conditions"][0]["type"] == "Complete"


def test_a_failed_trainjob_fails_naming_why(tmp_path):
    def failed(obj):
        obj["status"] = {
            "conditions": [{"type": "Failed", "status": "True", "message": "OOMKilled on node-0"}]
        }

    cluster = kube.KubernetesCluster(NAMESPACE, api=ApiRecorder(on_get=failed), poll_s=0)
    cluster.create(build_trainjob(cluster_settings(tmp_path), name="t2", frame="s3://b/t"))
    with pytest.raises(ServiceError, match="TrainJob t2 failed: OOMKilled on node-0"):
        cluster.wait("TrainJob", "t2", trainjob_done, timeout_s=5)


def test_api_errors_name_the_object(tmp_path):
    class Refusing(ApiRecorder):
        def create_namespaced_custom_object(self, *args, **kw):
            raise ApiException(status=422, reason="Unprocessable Entity")

    cluster = kube.KubernetesCluster(NAMESPACE, api=Refusing(), poll_s=0)
    job = build_trainjob(cluster_settings(tmp_path), name="t3", frame="s3://b/t")
    with pytest.raises(ServiceError, match=r"dry run\) TrainJob flywheel/t3: 422"):
        cluster.create(job)


# --- rollout ----------


def test_rollout_patches_the_isvc_the_chart_created_and_waits_until_ready(tmp_path, dev):
    isvc = dev.get("InferenceService", names.INFERENCE_SERVICE)

    def controller(obj):  # KServe: the new revision becomes ready
        obj.setdefault("status", {})["observedGeneration"] = obj["metadata"].get("generation")
        obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]

    api = ApiRecorder(on_get=controller)
    api.objects[("inferenceservices", isvc["metadata"]["name"])] = copy.deepcopy(isvc)
    cluster = kube.KubernetesCluster(NAMESPACE, api=api, poll_s=0)
    served = rollout.roll_out(cluster_settings(tmp_path), "7", cluster=cluster, timeout_s=5)
    assert served == "7"
    obj = api.objects[("inferenceservices", names.INFERENCE_SERVICE)]
    assert obj["metadata"]["annotations"][rollout.ANNOTATION] == "7"
    assert obj["spec"]["predictor"]["annotations"][rollout.ANNOTATION] == "7"
    assert obj["spec"]["predictor"]["containers"] == isvc["spec"]["predictor"]["containers"]


def test_rollout_fails_naming_why_when_not_ready(tmp_path, dev):
    def stuck(obj):
        obj["status"] = {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RevisionMissing"},
                {"type": "PredictorReady", "status": "False", "message": "ImagePullBackOff"},
            ]
        }

    api = ApiRecorder(on_get=stuck)
    isvc = dev.get("InferenceService", names.INFERENCE_SERVICE)
    api.objects[("inferenceservices", names.INFERENCE_SERVICE)] = copy.deepcopy(isvc)
    cluster = kube.KubernetesCluster(NAMESPACE, api=api, poll_s=0.05)
    with pytest.raises(ServiceError, match="ImagePullBackOff"):
        rollout.roll_out(cluster_settings(tmp_path), "8", cluster=cluster, timeout_s=0.2)


def test_rollout_without_the_chart_fails_naming_it(tmp_path):
    cluster = kube.KubernetesCluster(NAMESPACE, api=ApiRecorder(), poll_s=0)
    with pytest.raises(ServiceError, match="no InferenceService flywheel/flywheel: install"):
        rollout.roll_out(cluster_settings(tmp_path), "1", cluster=cluster, timeout_s=1)


# --- RBAC covers exactly what the code calls ----------


def test_rbac_role_grants_exactly_the_calls_the_code_makes(tmp_path, dev):
    def ready(obj):
        if obj["kind"] == "TrainJob":
            obj["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        else:
            obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}

    api = ApiRecorder(on_get=ready)
    isvc = dev.get("InferenceService", names.INFERENCE_SERVICE)
    api.objects[("inferenceservices", names.INFERENCE_SERVICE)] = copy.deepcopy(isvc)
    cluster = kube.KubernetesCluster(NAMESPACE, api=api, poll_s=0)
    s = cluster_settings(tmp_path)
    # the train step's calls (run_trainjob before it reads MLflow) and the deploy step's
    job = build_trainjob(s, name="t4", frame="s3://b/t")
    cluster.create(job)
    cluster.wait("TrainJob", "t4", trainjob_done, 5)
    rollout.roll_out(s, "3", cluster=cluster, timeout_s=5)
    used = {(group, plural, verb) for verb, group, plural, _ in api.calls}

    role = dev.get("Role", names.ROLE)
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert used == granted  # everything called is granted, nothing more is
    declared = {
        (kube.KINDS[kind][0], kube.KINDS[kind][2], verb)
        for kind, verbs in kube.VERBS.items()
        for verb in verbs
    }
    assert declared == granted
    isvc_rule = next(r for r in role["rules"] if "inferenceservices" in r["resources"])
    assert isvc_rule["resourceNames"] == [names.INFERENCE_SERVICE]
    binding = dev.get("RoleBinding", names.ROLE)
    assert binding["roleRef"]["name"] == names.ROLE
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {
        ("pipeline-runner", "kubeflow")
    }


# --- the namespace and the backend ----------


def test_namespace_is_never_default_silently(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "SERVICEACCOUNT_NAMESPACE", tmp_path / "absent")
    with pytest.raises(SettingsError, match="FLYWHEEL_NAMESPACE"):
        kube.get_cluster(load(home=tmp_path / "h"))
    sa = tmp_path / "namespace"
    sa.write_text("team-a\n")
    monkeypatch.setattr(kube, "SERVICEACCOUNT_NAMESPACE", sa)
    assert kube.get_cluster(load(home=tmp_path / "h")).namespace == "team-a"
    assert kube.get_cluster(load(home=tmp_path / "h", namespace="ml")).namespace == "ml"


def test_the_chart_sets_the_release_namespace(dev):
    assert dev.get("ConfigMap", names.CONFIG_MAP)["data"]["FLYWHEEL_NAMESPACE"] == NAMESPACE
