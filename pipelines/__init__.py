"""Kubeflow pipelines composed from components/: one turn of the flywheel and a sweep."""
