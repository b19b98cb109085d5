"""Kubeflow Pipelines components: one thin wrapper per step of the loop.

Each component is a lightweight Python component whose body imports `flywheel` and calls
one function of `flywheel.loop.steps`; the logic lives there, testable without KFP. The
base image is the platform image (flywheel.names.IMAGE), which already holds flywheel and
kfp, so nothing is pip-installed when a step starts on the cluster. Every step reads its
settings (URLs, tokens) from FLYWHEEL_* environment variables: on the cluster the platform
ConfigMap and Secret by reference, locally `Settings.to_env` of the process that runs it.

Caching: steps whose result depends on the world outside their inputs (the labels in
Label Studio, the current champion) are never cached; build_features and train are keyed
on the snapshot id, so a second run on the same labels is served from cache.
"""

from components.build_features import build_features
from components.deploy import deploy
from components.evaluate import evaluate
from components.export_labels import export_labels
from components.register import register
from components.select_for_labelling import select_for_labelling
from components.train import pick_best, train

__all__ = [
    "build_features",
    "deploy",
    "evaluate",
    "export_labels",
    "pick_best",
    "register",
    "select_for_labelling",
    "train",
]
