#!/usr/bin/env bash
# Install flywheel's cluster prerequisites from their upstream releases, pinned in
# versions.env, into the cluster in KUBECONFIG. Idempotent (server-side apply): rerun freely.
#
#   infra/prereqs/install.sh            cert-manager, KServe (RawDeployment), Kubeflow
#                                       Pipelines standalone, Kubeflow Trainer v2 + runtimes
#   GPU_OPERATOR=1 infra/prereqs/install.sh   ... and the NVIDIA GPU operator
#
# Needs: kubectl >= 1.29 (with kustomize built in) and, for the GPU operator, the flywheel
# .venv (helm-python-sdk; no helm binary). `make deploy` runs this when the CRDs are missing.
set -euo pipefail
cd "$(dirname "$0")"
source ./versions.env
GH=https://github.com
apply() { kubectl apply --server-side --force-conflicts "$@"; }

echo "== cert-manager ${CERT_MANAGER_VERSION}"
apply -f "${GH}/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
kubectl -n cert-manager rollout status deploy/cert-manager-webhook --timeout=300s

echo "== KServe ${KSERVE_VERSION} (RawDeployment: plain Deployments, no Knative/Istio)"
apply -f "${GH}/kserve/kserve/releases/download/${KSERVE_VERSION}/kserve.yaml"
kubectl -n kserve rollout status deploy/kserve-controller-manager --timeout=300s
apply -f "${GH}/kserve/kserve/releases/download/${KSERVE_VERSION}/kserve-cluster-resources.yaml"
kubectl -n kserve patch configmap/inferenceservice-config --type=merge \
  -p '{"data":{"deploy":"{\"defaultDeploymentMode\":\"RawDeployment\"}"}}'

echo "== Kubeflow Pipelines ${KFP_VERSION} (standalone, namespace kubeflow)"
apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=${KFP_VERSION}"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}"

echo "== Kubeflow Trainer ${TRAINER_VERSION} (controller + torch-distributed runtime)"
apply -k "${GH}/kubeflow/trainer.git/manifests/overlays/manager?ref=${TRAINER_VERSION}"
kubectl -n kubeflow-system rollout status deploy/kubeflow-trainer-controller-manager --timeout=300s
apply -k "${GH}/kubeflow/trainer.git/manifests/overlays/runtimes?ref=${TRAINER_VERSION}"

if [[ "${GPU_OPERATOR:-0}" == "1" ]]; then
  echo "== NVIDIA GPU operator ${GPU_OPERATOR_VERSION}"
  ../../.venv/bin/python - "${GPU_OPERATOR_VERSION}" <<'PY'
import sys
import helm_python as helm

with helm.Config(namespace="gpu-operator") as cfg:
    cfg.install("gpu-operator", "gpu-operator", {}, namespace="gpu-operator",
                create_namespace=True, chart_repo_url="https://helm.ngc.nvidia.com/nvidia",
                chart_version=sys.argv[1], wait="watcher", timeout=900)
PY
fi

kubectl -n kubeflow rollout status deploy/ml-pipeline --timeout=600s
echo "prerequisites ready"
