"""flywheel: the data flywheel as running software.

Label Studio (labels) -> Feast (features) -> PyTorch Lightning (training) -> MLflow
(tracking and registry) -> KServe (serving) -> the least certain items go back to Label
Studio with the model's guess attached -> the next turn trains a better model.

This package holds the domain logic. It never imports KFP: `components/` wraps it for
Kubeflow Pipelines and `pipelines/` composes those wrappers.
"""

__version__ = "0.1.0"
