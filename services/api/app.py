"""The serlens HTTP API as a Ray Serve application: ``build_app(args)``.

``serve run serlens.api.app:build_app workdir=...`` or a Serve config with
``import_path: serlens.api.app:build_app``. One FastAPI ingress (``Ingress``) composed
with the ``Normalize``, ``Egemaps``, ``Embed`` and ``Predict`` deployments through handles.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from serlens.api.config import TRAIN_DRIVER_RESOURCE, ApiArgs, ApiConfig
from serlens.api.records import CheckpointIndex
from serlens.api.routes import IngressState, create_app
from serlens.api.tokens import add_token
from serlens.egemaps.app import build_app as build_egemaps
from serlens.embed.app import build_app as build_embed
from serlens.normalize.app import build_app as build_normalize
from serlens.predict.app import build_app as build_predict
from serlens.shared.errors import ServiceError
from serlens.shared.schema import CHECKPOINTS
from serlens.shared.serving import merge_options

logger = logging.getLogger("ray.serve")

#: Serve options of the ingress; ``deployment_options.Ingress`` and a Serve config's entry win.
#: It only parses, checks and awaits the other deployments, so one replica holds many requests.
DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "Ingress",
    "ray_actor_options": {"num_cpus": 0.1},
    "max_ongoing_requests": 64,
}

#: The state of the ingress replica in this process (Serve runs one replica per actor
#: process). FastAPI apps cannot be pickled, so Serve builds the app inside the replica
#: with ``_asgi_app`` after ``Ingress.__init__`` has set this.
_REPLICA: dict[str, IngressState] = {}


def _asgi_app() -> FastAPI:
    return create_app(_REPLICA["state"])


class Ingress:
    """The FastAPI ingress: authenticates, checks requests, awaits the deployments, writes the store.

    Args:
        args: the ``ApiArgs`` mapping.
        normalize, egemaps, embed, predict: handles of the composed deployments.

    Raises:
        InvalidConfigError: invalid args, or no readable token file.
    """

    def __init__(
        self,
        args: dict[str, Any],
        normalize: DeploymentHandle,
        egemaps: DeploymentHandle,
        embed: DeploymentHandle,
        predict: DeploymentHandle,
    ) -> None:
        config = ApiArgs.model_validate(args).to_config()
        store = config.paths.store
        store.init()
        if not store.db_path.exists():
            # A fresh workdir: create the views once so that /sql answers (empty tables). A
            # replica starting beside this one may hold the file; then it writes them.
            try:
                store.refresh_views()
            except ServiceError as err:
                logger.warning("Ingress: views not created in %s: %s", store.db_path, err)
        self.state = IngressState(
            config=config, normalize=normalize, egemaps=egemaps, embed=embed, predict=predict
        )
        _REPLICA["state"] = self.state

    async def check_health(self) -> None:
        """Healthy while the store answers a query.

        Raises:
            StoreError: the store's tables cannot be read.
        """
        await asyncio.to_thread(self.state.store.read, CHECKPOINTS.name, columns=["train_key"])


def _gpus_in_cluster() -> float:
    # `serve run` imports and builds the app before it starts or joins Ray: then ask torch.
    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    import torch

    return float(torch.cuda.device_count())


def _egemaps_replicas() -> int:
    # One openSMILE extractor per core (each is single-threaded), as the pipeline's Ray pool does.
    if ray.is_initialized():
        cpus = ray.cluster_resources().get("CPU", 1.0)
    else:
        import os

        cpus = os.cpu_count() or 1
    return max(1, min(8, int(cpus)))


def _default_model(config: ApiConfig) -> str | None:
    """The model folder to load at start: the configured model, the promoted one, or None."""
    index = CheckpointIndex(config.paths.store, config.paths, default_model=config.model)
    try:
        return index.resolve(None).local_path
    except ServiceError:
        return None


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application: ``Ingress`` over ``Normalize``, ``Egemaps``, ``Embed``, ``Predict``.

    Args:
        args: an ``ApiArgs`` mapping (the Serve config's ``args``); unknown keys are refused.

    Raises:
        pydantic.ValidationError: ``args`` that do not validate.
    """
    api = ApiArgs.model_validate(args or {})
    config = api.to_config()
    options = config.deployment_options
    num_gpus = api.model_gpus if api.model_gpus is not None else (0.5 if _gpus_in_cluster() > 0 else 0)
    preload = _default_model(config)
    embed_app = build_embed(
        api.embed.model_dump(),
        max_batch_size=api.embed_max_batch_size,
        batch_wait_timeout_s=api.embed_batch_wait_timeout_s,
        preload=preload,
        num_gpus=num_gpus,
        **options.get("Embed", {}),
    )
    # A configured model may be a plain encoder (no classifier head): Predict loads on demand then.
    predict_app = build_predict(
        api.predict.model_dump(), preload=preload if api.model is None else None, num_gpus=num_gpus,
        **options.get("Predict", {}),
    )
    egemaps_app = build_egemaps(
        api.egemaps.model_dump(),
        **merge_options({"num_replicas": api.egemaps_replicas or _egemaps_replicas()}, options.get("Egemaps")),
    )
    ingress = serve.deployment(**merge_options(DEPLOYMENT_OPTIONS, options.get("Ingress")))(
        serve.ingress(_asgi_app)(Ingress)
    )
    return ingress.bind(
        api.model_dump(),
        build_normalize(api.normalize.model_dump(), **options.get("Normalize", {})),
        egemaps_app,
        embed_app,
        predict_app,
    )


def start_app(
    args: dict[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    num_cpus: int | None = None,
    dashboard_port: int | None = None,
) -> str:
    """Start (or join) Ray and run the application without blocking; returns its base URL.

    Args:
        args: the application's ``ApiArgs`` mapping.
        host: interface to listen on.
        port: HTTP port.
        address: a Ray cluster to join (default: start a local Ray with a dashboard; being
            the only node, it also offers the training drivers' resource, ``max_train_jobs``
            of it, for the runs ``POST /train`` starts).
        num_cpus: logical CPUs of a local Ray (default: the machine's).
        dashboard_port: port of a local Ray's dashboard (default: Ray's 8265).
    """
    if address:
        ray.init(address=address)
    else:
        api = ApiArgs.model_validate(args)
        extra = {"dashboard_port": dashboard_port} if dashboard_port else {}
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 resources={TRAIN_DRIVER_RESOURCE: float(api.max_train_jobs)},
                 log_to_driver=False, logging_level="WARNING", **extra)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name="serlens", route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def first_token(config: ApiConfig) -> str | None:
    """Create the token file with one all-scopes token for this OS user if there is none yet.

    Returns:
        The new token (shown once; only its digest is kept), or None when the file existed.
    """
    if config.tokens_file.exists():
        return None
    return add_token(config.tokens_file, name=getpass.getuser(), scopes=["read", "predict", "train"])


def serve_locally(workdir: str, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None) -> None:
    """Run the application on ``host:port`` and block until Ctrl-C (``serlens serve``).

    Args:
        workdir: the workdir of a ``serlens run`` (its store and checkpoints).
        host: interface to listen on.
        port: HTTP port.
        address: a Ray cluster to join (default: a local Ray).
    """
    import time

    args = {"workdir": workdir}
    token = first_token(ApiArgs.model_validate(args).to_config())
    if token:
        print(f"created a token file with a token for {getpass.getuser()} (read, predict, train); "
              f"it is shown only now:\n  export SERLENS_TOKEN={token}", flush=True)
    url = start_app(args, host=host, port=port, address=address)
    print(f"serlens API on {url} (docs: {url}/docs, with 'Authorization: Bearer $SERLENS_TOKEN'); "
          "Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
