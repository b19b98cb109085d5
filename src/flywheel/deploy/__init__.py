"""Cluster mode: render the Helm charts (charts/flywheel), check them offline, install them.

- `render.render(profile, overrides)`: the umbrella chart rendered by Helm's own engine
  (helm-python-sdk, no helm binary, no cluster).
- `checks.run_all()`: helm lint, kubernetes-validate --strict, CRD validation of custom
  resources and the security-default assertions, for every values profile.
- `cli`: `flywheel deploy [--dry-run]`, `flywheel undeploy`, `flywheel crds download`.
"""
