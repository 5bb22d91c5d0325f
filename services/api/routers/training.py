"""Training jobs and model promotion (``train`` scope; the served model is ``read``).

``POST /train`` takes a dataset name and hyper-parameters only (``TrainRequest``); each job is
its submitter's alone. Training never changes the model ``/embed`` and ``/predict`` serve:
``POST /models/promote`` does, explicitly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from serlens.api.auth import require
from serlens.api.bodies import Promoted, ServedModel, TrainDatasets, TrainJobList, TrainJobStatus, TrainSubmitted
from serlens.api.encoding import jsonable
from serlens.api.promotions import current_promotion, promote
from serlens.api.responses import COMMON_ERRORS, errors, ok
from serlens.api.tokens import Caller
from serlens.api.train_request import TrainRequest, prepare_config

if TYPE_CHECKING:
    from serlens.api.routes import IngressState

#: A job id as the API makes them.
JobId = Annotated[str, Path(pattern=r"^serlens-train-[0-9a-f]{12}$")]


class PromoteRequest(BaseModel):
    """The body of ``POST /models/promote``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_key: str = Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")
    checkpoint_step: int = Field(ge=0, le=10_000_000)
    note: str | None = Field(default=None, max_length=500)


def training_router(state: IngressState) -> APIRouter:
    """``/train``, ``/train/{job_id}``, ``/train/datasets``, ``/models`` and ``/models/promote``."""
    config = state.config
    router = APIRouter(tags=["training"], responses=errors(*COMMON_ERRORS))
    train = Depends(require("train"))
    read = Depends(require("read"))

    @router.post("/train", status_code=202, summary="Start a fine-tuning run as a Ray job", response_model=None,
                 responses={**ok(TrainSubmitted, status=202), **errors(400, 409, 422, 429)})
    async def submit(request: TrainRequest, caller: Caller = train) -> dict[str, Any]:
        path, key = await asyncio.to_thread(prepare_config, request, config)
        return await asyncio.to_thread(
            state.jobs.submit, path, request_key=key, owner=caller.name, dataset=request.dataset
        )

    @router.get("/train", summary="The caller's training jobs", response_model=None, responses=ok(TrainJobList))
    async def jobs(caller: Caller = train) -> dict[str, Any]:
        return {"jobs": await asyncio.to_thread(state.jobs.owned, caller.name)}

    @router.get("/train/datasets", summary="The datasets POST /train accepts", response_model=None,
                responses=ok(TrainDatasets))
    async def datasets(caller: Caller = train) -> dict[str, Any]:
        return {"datasets": sorted(config.train_datasets), "max_train_jobs": config.max_train_jobs}

    @router.get("/train/{job_id}", summary="State, log tail, checkpoints and metrics of one of the caller's jobs",
                response_model=None, responses={**ok(TrainJobStatus), **errors(404, 422)})
    async def status(job_id: JobId, tail: int = Query(50, ge=0, le=10_000), caller: Caller = train) -> dict[str, Any]:
        return jsonable(await asyncio.to_thread(state.jobs.status, job_id, owner=caller.name, tail_lines=tail))

    @router.get("/models", summary="The model /embed and /predict serve by default", response_model=None,
                responses=ok(ServedModel))
    async def served(caller: Caller = read) -> dict[str, Any]:
        promotion = await asyncio.to_thread(current_promotion, state.store)
        return jsonable({"configured_model": config.model, "promotion": promotion})

    @router.post("/models/promote", summary="Serve a stored checkpoint by default from now on",
                 response_model=None, responses={**ok(Promoted), **errors(400, 404, 422)})
    async def promote_checkpoint(request: PromoteRequest, caller: Caller = train) -> dict[str, Any]:
        row = await asyncio.to_thread(
            promote, config.paths, train_key=request.train_key, checkpoint_step=request.checkpoint_step,
            promoted_by=caller.name, note=request.note,
        )
        return jsonable({"promotion": row, "configured_model": config.model})

    return router
