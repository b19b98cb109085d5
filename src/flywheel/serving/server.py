"""What the predictor and the transformer share: KServe's arguments, the REST server, errors.

Both processes are `kserve.ModelServer`s. On the dev box (`FLYWHEEL_MODE=local`) they bind
`settings.host` (127.0.0.1), take their port from settings and run without gRPC; on the
cluster they bind 0.0.0.0 on KServe's port 8080 (gRPC on 8081) as the KServe controller
expects. KServe's own command-line arguments (`--model_name`, `--http_port`,
`--predictor_host`, `--predictor_protocol`, `--workers` ...) are accepted and win over
settings; everything else comes from flywheel settings (`FLYWHEEL_*`).

Three things KServe 0.21 does that we adjust here (see FACTS.md):
- it parses `sys.argv` when imported: `parse_args(argv)` sets argv before the first import;
- its REST server binds 0.0.0.0 with no option: `_rest_server_class` sets the host;
- a model that is not ready at start is not registered and `start` refuses to run: we
  register the model ourselves so a predictor without a champion answers not-ready (503).

Errors: KServe maps `InvalidInput` to 400 and `ModelNotReady` to 503; we add 400 for
flywheel's `InputError` and for request bodies FastAPI cannot parse, 413 for bodies over
`FLYWHEEL_MAX_REQUEST_BYTES`, 403 for a refused model-repository call (`unload` always,
`load` on the cluster: flywheel.serving.limits), and append the model's
`not_ready_reason` to 503 answers. Every error body is JSON `{"error": "..."}`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from flywheel.settings import Settings

KSERVE_PORT = 8080  # KServe's container port on the cluster


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """KServe's standard arguments; `None` for the ones flywheel fills from settings."""
    if argv is not None and "kserve.model_server" not in sys.modules:
        sys.argv = [sys.argv[0], *argv]  # KServe parses sys.argv on import
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(
        parents=[kserve_parser], description="flywheel model server (KServe)"
    )
    parser.set_defaults(
        model_name=None, http_port=None, predictor_host=None, predictor_protocol=None
    )
    args, _ = parser.parse_known_args(argv)
    if args.predictor_protocol is None:
        args.predictor_protocol = args.protocol  # the deprecated spelling, default v1
    return args


def bind_host(settings: Settings) -> str:
    """Local: settings.host. Cluster: every interface, unless FLYWHEEL_HOST says otherwise
    (the rehearsal maps the chart's 0.0.0.0 to loopback)."""
    if settings.mode == "local" or "host" in settings.model_fields_set:
        return settings.host
    return "0.0.0.0"


def http_port(settings: Settings, args: argparse.Namespace, local_port: int) -> int:
    if args.http_port is not None:
        return args.http_port
    return local_port if settings.mode == "local" else KSERVE_PORT


def _json_error(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message})


def _rest_server_class(host: str, name: str = "model", max_request_bytes: int = 32 << 20):
    """KServe's RESTServer, bound to `host`, with flywheel's error mapping, body limit and
    request metrics (flywheel.serving.metrics, labelled `server=name`) added."""
    from fastapi.exceptions import RequestValidationError
    from kserve.errors import ModelNotReady
    from kserve.protocol.rest.server import RESTServer

    from flywheel.errors import InputError
    from flywheel.serving.limits import BodyLimit, RepositoryRefused

    class FlywheelRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.config.host = host

        def _add_middlewares(self, app) -> None:
            from flywheel.serving.metrics import RequestMetrics

            super()._add_middlewares(app)
            app.add_middleware(RequestMetrics, server=name)
            app.add_middleware(BodyLimit, max_bytes=max_request_bytes)  # outermost

        def _add_exception_handlers(self, app) -> None:
            super()._add_exception_handlers(app)
            registry = self.dataplane.model_registry

            async def not_ready(_, exc: ModelNotReady):
                model = registry.get_model(exc.model_name)
                reason = getattr(model, "not_ready_reason", None)
                return _json_error(503, f"{exc} {reason}" if reason else str(exc))

            async def bad_body(_, exc: RequestValidationError):
                problems = [
                    f"{e.get('msg')} at {'.'.join(str(p) for p in e.get('loc', ()))}"
                    for e in exc.errors()[:3]
                ]
                return _json_error(400, "invalid request body: " + "; ".join(problems))

            async def input_error(_, exc: InputError):
                return _json_error(400, str(exc))

            async def refused(_, exc: RepositoryRefused):
                return _json_error(403, str(exc))

            app.add_exception_handler(ModelNotReady, not_ready)
            app.add_exception_handler(RequestValidationError, bad_body)
            app.add_exception_handler(InputError, input_error)
            app.add_exception_handler(RepositoryRefused, refused)

    return FlywheelRESTServer


def _guarded_extension_class(allow_load: bool):
    """KServe's model-repository endpoints with `unload` refused (403) and `load` refused
    on the cluster, where the predictor follows the champion alias by itself."""
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    from flywheel.serving.limits import RepositoryRefused

    class GuardedExtension(ModelRepositoryExtension):
        async def unload(self, model_name: str) -> None:
            raise RepositoryRefused(
                f"unloading model {model_name!r} is not allowed on the serving port; "
                "stop the server (or scale the InferenceService) instead"
            )

        async def load(self, model_name: str) -> None:
            if not allow_load:
                raise RepositoryRefused(
                    f"loading model {model_name!r} through the model repository is not "
                    "allowed on the cluster; the predictor follows the champion alias itself"
                )
            await super().load(model_name)

    return GuardedExtension


def _repository_class():
    """A model repository whose `load` (POST /v2/repository/models/<name>/load) re-reads
    the champion alias: it can load nothing else."""
    from kserve.errors import ModelNotFound
    from kserve.model_repository import ModelRepository

    class Repository(ModelRepository):
        async def load(self, name: str) -> bool:
            model = self.get_model(name)
            if model is None:
                raise ModelNotFound(name)
            reload = getattr(model, "reload", None)
            if reload is not None:  # off the event loop: requests keep being served
                await asyncio.to_thread(reload)
            return model.ready

    return Repository


def serve(
    model, settings: Settings, args: argparse.Namespace, local_port: int, predictor_config=None
) -> None:
    """Run a ModelServer for `model` until SIGTERM/SIGINT (blocks)."""
    import kserve.model_server as model_server

    local = settings.mode == "local"
    model_server.RESTServer = _rest_server_class(
        bind_host(settings), type(model).__name__.lower(), settings.max_request_bytes
    )
    server = model_server.ModelServer(
        http_port=http_port(settings, args, local_port),
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=bool(args.enable_grpc) and not local,
        registered_models=_repository_class()(),
        predictor_config=predictor_config,
        enable_latency_logging=args.enable_latency_logging,
    )
    # REST and gRPC repository endpoints: unload refused, load only on the dev box.
    server.model_repository_extension = _guarded_extension_class(local)(server.registered_models)
    # Registered even when not ready (no champion yet): it then answers 503, never 404/500.
    server.register_model(model)
    model.enable_latency_logging = args.enable_latency_logging
    server.start([])
