"""The cluster loop rehearsed on one machine (`make rehearsal`).

s3server    the S3-compatible object store (moto's server, from PyPI)
datastores  Postgres, Redis, S3, MLflow (basic auth), Label Studio on Postgres
pods        the environment a pod would get, with cluster names mapped to this box
pipeline    runs the compiled IR YAML task by task, as the KFP driver and launcher do
executor    KFP's executor with the pod's artifact mount
cluster     RehearsalCluster: flywheel.kube.Cluster for TrainJobs and the InferenceService
run         the rehearsal itself: `python -m flywheel.rehearsal`
"""
