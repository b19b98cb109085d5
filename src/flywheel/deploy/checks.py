"""Offline checks of the rendered charts, the same ones `make deploy DRY_RUN=1` runs.

For each variant (a values profile, with bundled or external datastores):

- lint: `helm lint` (helm-python-sdk) with the variant's values, subcharts included;
- core kinds: kubernetes-validate --strict against Kubernetes `KUBE_VERSION`;
- custom resources (InferenceService, TrainingRuntime, TrainJob): their upstream CRD's
  openAPIV3Schema, read from `settings.crds_dir` (failing, naming `make crds`, when it is absent);
- security defaults: every container has CPU/memory requests and limits, runs as non-root,
  cannot escalate privileges, drops ALL capabilities and has a read-only root filesystem
  (except the few images listed in WRITABLE_ROOT); every Service's pods are covered by a
  NetworkPolicy;
- secrets: every generated Secret value is non-empty, not a known default and different on
  each render (so it is generated, not fixed), and no env var carries a literal credential.

Each check returns a `Check` (pass / fail / skip with a one-line detail).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from flywheel import names
from flywheel.crds import MissingCRDs, validate_custom_resource
from flywheel.deploy.render import CHART_DIR, Rendered, deep_merge, profile_values, render_values
from flywheel.errors import InputError

# kubernetes-validate ships schemas for 1.25 ... 1.37; we validate against the oldest
# release the prerequisites (KServe 0.20, Trainer 2.3) still support.
KUBE_VERSION = "1.33.0"

CUSTOM_GROUPS = {"serving.kserve.io", "trainer.kubeflow.org", "feast.dev"}

# Containers allowed a writable root filesystem, and why.
WRITABLE_ROOT = {
    "label-studio": "the upstream image writes static files and caches into its own tree",
    "label-studio-migrate": "the same Label Studio image, running its migrations",
}

WEAK_SECRETS = {
    "",
    "admin",
    "password",
    "changeme",
    "secret",
    "minioadmin",
    "minio123",
    "postgres",
    "flywheel",
    "redis",
    "mlflow",
    "label-studio",
    "token",
    "12345678",
}

# External datastores, as a user would point at them (their Secrets exist beforehand).
EXTERNAL_DATASTORES = {
    "postgres": {"enabled": False},
    "redis": {"enabled": False},
    "minio": {"enabled": False},
    "seaweedfs": {"enabled": False},
    "global": {
        "postgres": {"host": "postgres.db.example.internal", "existingSecret": "external-postgres"},
        "redis": {"host": "redis.db.example.internal", "existingSecret": "external-redis"},
        "s3": {"endpoint": "https://s3.example.internal", "existingSecret": "external-s3"},
    },
}

# The optional way in (off by default), as a user would turn it on.
INGRESS = {
    "ingress": {
        "enabled": True,
        "hosts": {"labelStudio": "label.example.org", "mlflow": "mlflow.example.org"},
        "oauth2Proxy": {
            "oidcIssuerUrl": "https://login.example.org/realms/glam",
            "clientId": "flywheel",
            "existingSecret": "flywheel-oauth2-proxy",
            "emailDomains": ["example.org"],
        },
    },
    "labelstudio": {"extraAllowedHosts": ["label.example.org"]},
    "mlflow": {"extraAllowedHosts": ["mlflow.example.org"]},
}

# What `make deploy DRY_RUN=1` renders and checks: every profile, bundled and external
# datastores, and a one-off TrainJob so its CRD validation runs too.
VARIANTS: dict[str, tuple[str, dict]] = {
    "dev": ("dev", {}),
    "gpu": ("gpu", {}),
    "dev+external": ("dev", EXTERNAL_DATASTORES),
    "dev+ingress": ("dev", INGRESS),
    "gpu+external+trainjob": (
        "gpu",
        deep_merge(EXTERNAL_DATASTORES, {"training": {"job": {"enabled": True}}}),
    ),
}


@dataclass
class Check:
    variant: str
    name: str
    status: str  # pass | fail | skip
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def _result(variant: str, name: str, problems: list[str], passed: str) -> Check:
    if problems:
        shown = "; ".join(problems[:8]) + (
            f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        )
        return Check(variant, name, "fail", shown)
    return Check(variant, name, "pass", passed)


def _ident(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _group(obj: dict) -> str:
    api = obj.get("apiVersion", "")
    return api.rpartition("/")[0] if "/" in api else ""


# --- lint ----------


def lint(variant: str, values: dict, chart_dir: Path = CHART_DIR) -> Check:
    """`helm lint` with the variant's values; warnings and errors fail."""
    import helm_python as helm

    report = helm.lint(
        str(chart_dir),
        values,
        with_subcharts=True,
        kube_version=f"v{KUBE_VERSION}",
        namespace="flywheel",
    )
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    problems += list(report.get("errors") or [])
    return _result(
        variant, "helm lint", problems, f"{report['total_charts_linted']} chart(s), no warnings"
    )


# --- schemas ----------


def validate_core(rendered: Rendered, variant: str) -> Check:
    """kubernetes-validate --strict for every object of a core (or k8s.io) kind."""
    import kubernetes_validate as kv
    from kubernetes_validate.utils import SchemaNotFoundError

    problems, count = [], 0
    for obj in rendered.objects:
        if _group(obj) in CUSTOM_GROUPS:
            continue
        count += 1
        try:
            kv.validate(obj, KUBE_VERSION, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(map(str, exc.path)) or "<root>"
            problems.append(f"{_ident(obj)} {path}: {exc.message}")
        except SchemaNotFoundError as exc:
            problems.append(f"{_ident(obj)}: {exc.message}")
    return _result(
        variant, f"kubernetes-validate --strict {KUBE_VERSION}", problems, f"{count} objects valid"
    )


def validate_custom(rendered: Rendered, variant: str, crds_dir: Path) -> Check:
    """Every custom resource against its upstream CRD's openAPIV3Schema."""
    custom = [obj for obj in rendered.objects if _group(obj) in CUSTOM_GROUPS]
    problems = []
    try:
        for obj in custom:
            try:
                validate_custom_resource(obj, crds_dir)
            except MissingCRDs:
                raise
            except InputError as exc:
                problems.append(str(exc))
    except MissingCRDs as exc:  # a check with nothing to check fails, naming `make crds`
        return Check(variant, "custom resources vs CRDs", "fail", str(exc))
    kinds = ", ".join(sorted({_ident(o) for o in custom}))
    return _result(variant, "custom resources vs CRDs", problems, f"valid: {kinds}")


# --- security defaults ----------


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) for every pod template an object carries, custom kinds included."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    name = _ident(obj)
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [(name, spec["template"]["spec"])]
    if kind == "CronJob":
        return [(name, spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "Pod":
        return [(name, spec)]
    if kind == "InferenceService":
        return [
            (f"{name}.{part}", spec[part])
            for part in ("predictor", "transformer", "explainer")
            if part in spec
        ]
    if kind in ("TrainingRuntime", "ClusterTrainingRuntime"):
        jobs = spec["template"]["spec"]["replicatedJobs"]
        return [(f"{name}.{j['name']}", j["template"]["spec"]["template"]["spec"]) for j in jobs]
    return []


def container_problems(where: str, pod: dict) -> list[str]:
    problems = []
    pod_sc = pod.get("securityContext") or {}
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        at = f"{where}/{c.get('name')}"
        sc = c.get("securityContext") or {}
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in (res.get(part) or {})]
            if missing:
                problems.append(f"{at}: no {part} for {', '.join(missing)}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{at}: runAsNonRoot is not set")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{at}: runs as uid 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{at}: privileged")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{at}: capabilities are not dropped (drop: [ALL])")
        if sc.get("readOnlyRootFilesystem") is not True and c.get("name") not in WRITABLE_ROOT:
            problems.append(f"{at}: root filesystem is writable")
    return problems


def security(rendered: Rendered, variant: str) -> Check:
    problems, containers = [], 0
    for obj in rendered.objects:
        for where, pod in pod_specs(obj):
            containers += len(pod.get("containers") or []) + len(pod.get("initContainers") or [])
            problems += container_problems(where, pod)
        if obj.get("kind") == "TrainJob":
            per_node = (obj["spec"].get("trainer") or {}).get("resourcesPerNode") or {}
            if not (per_node.get("limits") and per_node.get("requests")):
                problems.append(f"{_ident(obj)}: trainer.resourcesPerNode lacks requests/limits")
    problems += network_policy_problems(rendered)
    return _result(
        variant,
        "security defaults",
        problems,
        f"{containers} containers: limits, non-root, no escalation, caps dropped, "
        "read-only root; NetworkPolicy on every Service",
    )


def network_policy_problems(rendered: Rendered) -> list[str]:
    if not rendered.values.get("global", {}).get("networkPolicy", {}).get("enabled", True):
        return []
    covered = set()
    for pol in rendered.of_kind("NetworkPolicy"):
        labels = pol["spec"]["podSelector"].get("matchLabels") or {}
        covered.add(labels.get("app.kubernetes.io/name"))
    problems = []
    for svc in rendered.of_kind("Service"):
        name = (svc["spec"].get("selector") or {}).get("app.kubernetes.io/name")
        if name not in covered:
            problems.append(f"Service/{svc['metadata']['name']}: no NetworkPolicy for its pods")
    return problems


# --- secrets ----------


def secret_values(rendered: Rendered) -> dict[str, str]:
    """'<secret>/<key>' -> decoded value, for every rendered Secret (user names left out)."""
    values = {}
    for key, copies in secret_copies(rendered).items():
        if key.rpartition("/")[2] not in NOT_SECRET_KEYS:
            values[key] = copies[0]
    return values


NOT_SECRET_KEYS = {"username", "mlflow-username", "MLFLOW_TRACKING_USERNAME"}
# What an identity's Secret holds, rendered offline, for a value of an existingSecret
# (charts/flywheel/charts/lib/templates/_helpers.tpl flywheel.platformSecretValue).
UNREAD_EXISTING = "unread-existingSecret-"


def secret_copies(rendered: Rendered) -> dict[str, list[str]]:
    """'<secret>/<key>' -> its decoded value in each namespace the Secret is written to."""
    out: dict[str, list[str]] = {}
    for sec in rendered.of_kind("Secret"):
        data = {k: base64.b64decode(v).decode() for k, v in (sec.get("data") or {}).items()}
        data.update(sec.get("stringData") or {})
        for key, value in data.items():
            out.setdefault(f"{sec['metadata']['name']}/{key}", []).append(value)
    return out


CREDENTIAL_ENV = re.compile(r"PASSWORD|SECRET|TOKEN$|_KEY$|ACCESS_KEY")


def literal_credentials(rendered: Rendered) -> list[str]:
    """Env vars named like credentials that carry a literal value instead of a secretKeyRef."""
    problems = []

    def walk(node, where):
        if isinstance(node, dict):
            if "name" in node and "value" in node and isinstance(node["name"], str):
                value = str(node["value"])
                if CREDENTIAL_ENV.search(node["name"]) and value not in ("", "true", "false"):
                    problems.append(f"{where}: env {node['name']} holds a literal value")
            for v in node.values():
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for obj in rendered.objects:
        if obj.get("kind") != "Secret":
            walk(obj.get("spec"), _ident(obj))
    return problems


def secrets(first: Rendered, second: Rendered, variant: str) -> Check:
    """Generated Secrets: non-empty, not a known default, different on each render."""
    a, b = secret_values(first), secret_values(second)
    problems = []
    for key, value in a.items():
        if UNREAD_EXISTING in value:
            continue  # from an external datastore's existingSecret: read with lookup at install
        if value.strip().lower() in WEAK_SECRETS or len(value) < 16:
            problems.append(f"Secret {key} is empty, short or a known default")
        elif b.get(key) == value:
            problems.append(f"Secret {key} is the same on two renders: a fixed value")
    for key, copies in secret_copies(first).items():
        if len(set(copies)) > 1:
            problems.append(f"Secret {key} differs between its namespaces")
    problems += literal_credentials(first)
    return _result(
        variant,
        "generated secrets",
        problems,
        f"{len(a)} values generated (differ per render), no literal credentials",
    )


# --- least privilege (issue 12) ----------

# Components that only answer: the default deny leaves them DNS and nothing else.
ANSWER_ONLY = {"postgres", "redis", "minio", "seaweedfs"}

PIPELINE_SECRET = names.SECRET  # the pipeline identity's: the only Secret pipeline tasks read
PIPELINE_KEYS = set(names.SECRET_KEYS)
# Superuser / admin credentials: never in the pipeline Secret.
ADMIN_KEYS = ("flywheel-postgres/", "flywheel-mlflow-auth/", "flywheel-seaweedfs-config/")
ADMIN_SECRET_USERS = {"Deployment/mlflow", "Job/mlflow-users"}  # who may hold the MLflow admin


def _release_namespace(rendered: Rendered) -> str:
    spaces = {s["metadata"].get("namespace") for s in rendered.of_kind("Secret")}
    return "flywheel" if "flywheel" in spaces or not spaces else sorted(spaces - {None})[0]


def pod_labels(obj: dict) -> list[tuple[str, dict]]:
    """(where, pod labels) for every pod template an object carries."""
    kind, spec, name = obj.get("kind"), obj.get("spec") or {}, _ident(obj)
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [(name, spec["template"].get("metadata", {}).get("labels") or {})]
    if kind == "CronJob":
        tpl = spec["jobTemplate"]["spec"]["template"]
        return [(name, tpl.get("metadata", {}).get("labels") or {})]
    if kind == "Pod":
        return [(name, obj.get("metadata", {}).get("labels") or {})]
    if kind == "InferenceService":
        return [
            (f"{name}.{p}", spec[p].get("labels") or {})
            for p in ("predictor", "transformer")
            if p in spec
        ]
    if kind in ("TrainingRuntime", "ClusterTrainingRuntime"):
        jobs = spec["template"]["spec"]["replicatedJobs"]
        return [
            (
                f"{name}.{j['name']}",
                j["template"]["spec"]["template"].get("metadata", {}).get("labels") or {},
            )
            for j in jobs
        ]
    return []


def _peers(policy: dict) -> list[tuple[str, dict]]:
    out = []
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for rule in policy["spec"].get(direction) or []:
            out += [(direction, peer) for peer in rule.get(key) or []]
    return out


def perimeter(rendered: Rendered, variant: str) -> Check:
    """Default deny (ingress and egress), DNS for all, an egress policy per component, a
    policy on the transformer, no whole-namespace peers, the ISVC cluster-local."""
    name = "perimeter (NetworkPolicy)"
    if not rendered.values.get("global", {}).get("networkPolicy", {}).get("enabled", True):
        return Check(
            variant, name, "fail", "global.networkPolicy.enabled is false: no perimeter at all"
        )
    policies = rendered.of_kind("NetworkPolicy")
    problems = []
    everyone = [p for p in policies if not p["spec"].get("podSelector")]
    if not any(
        {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes") or [])
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in everyone
    ):
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress)")
    if not any(
        any(
            port.get("port") == 53
            for rule in p["spec"].get("egress") or []
            for port in rule.get("ports") or []
        )
        for p in everyone
    ):
        problems.append("no egress to DNS (port 53) for every pod")
    egress_for, ingress_for = set(), set()
    for pol in policies:
        selected = (pol["spec"].get("podSelector", {}).get("matchLabels") or {}).get(
            "app.kubernetes.io/name"
        )
        types = set(pol["spec"].get("policyTypes") or [])
        if "Egress" in types and pol["spec"].get("egress"):
            egress_for.add(selected)
        if "Ingress" in types and pol["spec"].get("ingress"):
            ingress_for.add(selected)
        for direction, peer in _peers(pol):
            if "namespaceSelector" in peer and "podSelector" not in peer:
                problems.append(
                    f"NetworkPolicy/{pol['metadata']['name']}: {direction} admits a whole "
                    "namespace (namespaceSelector without podSelector)"
                )
            if direction == "ingress" and "ipBlock" in peer:
                problems.append(f"NetworkPolicy/{pol['metadata']['name']}: ingress by ipBlock")
    components = set()
    for obj in rendered.objects:
        for where, labels in pod_labels(obj):
            component = labels.get("app.kubernetes.io/name")
            components.add(component)
            if component not in egress_for and component not in ANSWER_ONLY:
                problems.append(f"{where}: no egress NetworkPolicy for its pods ({component})")
    if "serving-transformer" not in ingress_for:
        problems.append("no NetworkPolicy selects the transformer pods (serving-transformer)")
    for isvc in rendered.of_kind("InferenceService"):
        labels = isvc["metadata"].get("labels") or {}
        if labels.get("networking.kserve.io/visibility") != "cluster-local":
            problems.append(
                f"{_ident(isvc)}: not labelled networking.kserve.io/visibility: cluster-local"
            )
    return _result(
        variant,
        name,
        problems,
        f"default deny, DNS, egress for {len(components)} components, transformer covered, "
        "no namespace-wide peers, InferenceService cluster-local",
    )


def _secret_refs(node, found: list[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("secretKeyRef") or node.get("secretRef")
        if isinstance(ref, dict) and ref.get("name"):
            found.append(ref["name"])
        for v in node.values():
            _secret_refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _secret_refs(v, found)


def mlflow_identities(rendered: Rendered) -> dict[str, str]:
    """{identity: permission} as the mlflow-users Job will create them."""
    import json

    for job in rendered.of_kind("Job"):
        if job["metadata"]["name"] != "mlflow-users":
            continue
        for _, pod in pod_specs(job):
            for c in pod["containers"]:
                for e in c.get("env") or []:
                    if e["name"] == "FLYWHEEL_MLFLOW_IDENTITIES":
                        return json.loads(e["value"])
    return {}


def credentials(rendered: Rendered, variant: str) -> Check:
    """No credential spill: only the pipeline Secret leaves the release namespace, with only
    the pipeline's MLflow identity, the Label Studio token, the bucket-scoped S3 keys and
    the Feast role's URLs (no superuser or admin value); Secrets kept on uninstall; the
    MLflow admin only in MLflow and its users Job."""
    home = _release_namespace(rendered)
    problems, outside = [], 0
    for sec in rendered.of_kind("Secret"):
        meta = sec["metadata"]
        ns, name = meta.get("namespace", home), meta["name"]
        if (meta.get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
            problems.append(f"Secret {ns}/{name}: no helm.sh/resource-policy: keep")
        if ns == home:
            continue
        outside += 1
        keys = set(sec.get("data") or {}) | set(sec.get("stringData") or {})
        if name != PIPELINE_SECRET:
            problems.append(f"Secret {name} is copied to namespace {ns}: only {PIPELINE_SECRET}")
        elif keys - PIPELINE_KEYS:
            problems.append(f"Secret {ns}/{name} carries {sorted(keys - PIPELINE_KEYS)}")
    values = secret_copies(rendered)
    admin = {v for k, vs in values.items() if k.startswith(ADMIN_KEYS) for v in vs if v}
    for key, copies in values.items():
        if key.startswith(f"{PIPELINE_SECRET}/") and any(
            a in v for v in copies for a in admin if len(a) >= 16
        ):
            problems.append(f"Secret {key} holds a superuser or admin credential")
    if outside and any(s["metadata"]["name"] == "minio" for s in rendered.of_kind("StatefulSet")):
        problems.append(
            f"the bundled MinIO has only root keys (flywheel-s3), and {PIPELINE_SECRET} would "
            "carry them to the pipelines' namespace: use seaweedfs (bucket-scoped keys) or an "
            "external S3 with scoped keys"
        )
    identities = mlflow_identities(rendered)
    if not identities:
        problems.append("no MLflow identities (Job/mlflow-users FLYWHEEL_MLFLOW_IDENTITIES)")
    for name in ("serving", "reader"):
        if identities.get(name, "READ") != "READ":
            problems.append(f"MLflow identity {name} has {identities[name]}: READ only")
    managers = sorted(n for n, p in identities.items() if p == "MANAGE")
    if len(managers) > 1:
        problems.append(f"MLflow identities {managers} may all move `champion`: one promoter")
    for pvc in rendered.of_kind("PersistentVolumeClaim"):
        if (pvc["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
            problems.append(f"{_ident(pvc)}: no helm.sh/resource-policy: keep")
    for obj in rendered.objects:
        refs: list[str] = []
        _secret_refs(obj.get("spec"), refs)
        if "flywheel-mlflow-auth" in refs and _ident(obj) not in ADMIN_SECRET_USERS:
            problems.append(f"{_ident(obj)} uses the MLflow admin (flywheel-mlflow-auth)")
    return _result(
        variant,
        "credentials (no spill, kept)",
        problems,
        f"{outside} Secret(s) outside {home}: {PIPELINE_SECRET} only; Secrets and PVCs kept; "
        "MLflow admin only in MLflow",
    )


LABEL_STUDIO_ENV = {
    "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    "SSRF_PROTECTION_ENABLED": "true",
    "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
}


def label_studio(rendered: Rendered, variant: str) -> Check:
    """Label Studio: signup by invite, SSRF protection, local files under one root, hosts."""
    try:
        deploy = rendered.get("Deployment", "label-studio")
    except Exception:  # noqa: BLE001 - not deployed in this variant
        return Check(variant, "Label Studio hardening", "skip", "no Label Studio Deployment")
    (container,) = [c for _, pod in pod_specs(deploy) for c in pod["containers"]][:1]
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    problems = [
        f"env {k} is {env.get(k)!r}, not {v!r}"
        for k, v in LABEL_STUDIO_ENV.items()
        if env.get(k) != v
    ]
    root = env.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") or ""
    if root in ("", "/") or not root.startswith("/"):
        problems.append(f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is {root!r}: name the images")
    hosts = env.get("ALLOWED_HOSTS") or ""
    if not hosts or "*" in hosts.split(","):
        problems.append(f"ALLOWED_HOSTS is {hosts!r}: name the hosts")
    if env.get("USE_DEFAULT_BANNED_SUBNETS") == "false" and not env.get(
        "USER_ADDITIONAL_BANNED_SUBNETS"
    ):
        problems.append("default banned subnets off and none banned instead")
    return _result(
        variant,
        "Label Studio hardening",
        problems,
        f"signup by invite, SSRF protection, files under {root}, hosts {hosts}",
    )


DIGEST = re.compile(r"@sha256:[a-f0-9]{64}$")


def images(rendered: Rendered, variant: str) -> Check:
    """Third-party images pinned by digest (fail when global.requireImageDigests, else
    skip naming them); the platform image by digest when global.image.digest is set."""
    g = rendered.values.get("global") or {}
    platform = (g.get("image") or {}).get("repository", "ghcr.io/flywheel-ml/flywheel")
    want_platform = bool((g.get("image") or {}).get("digest"))
    unpinned, problems, seen = set(), [], set()
    for obj in rendered.objects:
        for where, pod in pod_specs(obj):
            for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
                ref = c.get("image", "")
                seen.add(ref)
                if ref.split("@")[0].rsplit(":", 1)[0] == platform:
                    if want_platform and not DIGEST.search(ref):
                        problems.append(
                            f"{where}/{c.get('name')}: platform image {ref} not by digest"
                        )
                elif not DIGEST.search(ref):
                    unpinned.add(ref)
    name = "images pinned by digest"
    if problems:
        return Check(variant, name, "fail", "; ".join(problems[:8]))
    if unpinned:
        detail = f"not pinned by digest: {', '.join(sorted(unpinned))} (set <chart>.image.digest)"
        if g.get("requireImageDigests"):
            return Check(variant, name, "fail", detail)
        return Check(variant, name, "skip", detail)
    return Check(variant, name, "pass", f"{len(seen)} image references, all by digest")


# --- all of them ----------


def check_variant(
    variant: str, profile: str, overrides: dict, crds_dir: Path, chart_dir: Path = CHART_DIR
) -> list[Check]:
    values = profile_values(profile, overrides, chart_dir)
    first = render_values(values, profile=profile, chart_dir=chart_dir)
    second = render_values(values, profile=profile, chart_dir=chart_dir)
    return [
        Check(
            variant,
            "render",
            "pass",
            f"profile {profile}: {len(first.objects)} objects from {len(first.manifests)} files",
        ),
        lint(variant, values, chart_dir),
        validate_core(first, variant),
        validate_custom(first, variant, crds_dir),
        security(first, variant),
        secrets(first, second, variant),
        perimeter(first, variant),
        credentials(first, variant),
        label_studio(first, variant),
        images(first, variant),
    ]


def run_all(
    crds_dir: Path, variants: dict[str, tuple[str, dict]] | None = None, chart_dir: Path = CHART_DIR
) -> list[Check]:
    """Every check for every variant. A variant that fails to render is one failed check."""
    results = []
    for variant, (profile, overrides) in (variants or VARIANTS).items():
        try:
            results += check_variant(variant, profile, overrides, crds_dir, chart_dir)
        except InputError as exc:  # schema error, unknown profile
            results.append(Check(variant, "render", "fail", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a render failure is a failed check
            results.append(Check(variant, "render", "fail", " ".join(str(exc).split())))
    return results
