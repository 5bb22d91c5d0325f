"""``POST /sql``: one read-only query over the store's views (``read`` scope).

Thin on purpose: the sandbox (what may run, with which limits) is ``run_readonly_query``'s.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from serlens.api.auth import require
from serlens.api.bodies import SqlResult
from serlens.api.config import ApiConfig
from serlens.api.encoding import jsonable, rows_to_csv
from serlens.api.responses import COMMON_ERRORS, errors, ok
from serlens.shared.store import run_readonly_query

#: Longest accepted query text, in characters.
MAX_QUERY_CHARS = 100_000


class SqlRequest(BaseModel):
    """The body of ``POST /sql``."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=MAX_QUERY_CHARS, description="one read-only SELECT over the store's views")
    format: Literal["json", "csv"] = "json"


def sql_router(config: ApiConfig) -> APIRouter:
    """The ``/sql`` route over the store of ``config``."""
    router = APIRouter(tags=["sql"], dependencies=[Depends(require("read"))], responses=errors(*COMMON_ERRORS))
    store = config.paths.store

    @router.post(
        "/sql",
        summary="One read-only SELECT over the store's views",
        description="Runs sandboxed (read-only, no files outside the store, no extensions, one "
        "statement); 400 with the reason when refused or past the time limit; 503 when too "
        "many queries run at once.",
        responses={**ok(SqlResult, "text/csv"), **errors(400, 422)},
    )
    async def sql(request: SqlRequest) -> Response:
        columns, rows, truncated = await asyncio.to_thread(
            run_readonly_query,
            store,
            request.query,
            limits=config.sql_limits,
        )
        if request.format == "csv":
            return Response(
                rows_to_csv(columns, rows),
                media_type="text/csv",
                headers={"X-Truncated": str(truncated).lower()},
            )
        return JSONResponse(
            {"columns": columns, "rows": jsonable(rows), "row_count": len(rows), "truncated": truncated}
        )

    return router
