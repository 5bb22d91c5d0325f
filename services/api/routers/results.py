"""``GET /results/{table}``: result tables as JSON, CSV or a figure; ``GET /schema``: their meaning (``read``).

Tables are served by name from ``RESULT_TABLES``: adding a table of ``serlens.shared.schema`` is
one line there. Any column of the table is a query filter (equality; the value is converted
to the column's type); ``/cka`` and ``/probes`` stay as the paths of their tables.
"""

from __future__ import annotations

import asyncio
import importlib
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from serlens.api.auth import require
from serlens.api.bodies import ResultTables, TableRows, table_rows
from serlens.api.encoding import jsonable, rows_to_csv
from serlens.api.responses import COMMON_ERRORS, errors, ok
from serlens.shared.column_docs import TableDoc, schema_listing
from serlens.shared.errors import InvalidRequestError, NotFoundError, ServiceError
from serlens.shared.runs import latest_run
from serlens.shared.schema import (
    CKA,
    CKA_CHANGES,
    CKA_DRIFT,
    CKA_LAYERS,
    PROBE_CLASSES,
    PROBE_CONFUSION,
    PROBE_FEATURES,
    PROBES,
    table,
)
from serlens.shared.store import FeatureStore


@dataclass(frozen=True)
class ResultTable:
    """A store table served under ``/results/{name}``.

    Attributes:
        name: the table's name in ``serlens.shared.schema``.
        summary: one line for the API docs.
        figure: ``(module, function)`` drawing rows as ``function(rows, stem, **options)``, or None.
        figure_options: query parameters passed on to the figure function (and used as filters).
    """

    name: str
    summary: str
    figure: tuple[str, str] | None = None
    figure_options: tuple[str, ...] = ()


#: The result tables the API serves, by name.
RESULT_TABLES: dict[str, ResultTable] = {t.name: t for t in (
    ResultTable(CKA.name, "CKA of each checkpoint and layer against eGeMAPS",
                ("serlens.cka.figures", "plot_cka_heatmap"), ("estimator",)),
    ResultTable(CKA_CHANGES.name, "change of CKA with eGeMAPS against checkpoint 0 or the previous one, with "
                "speaker-jackknife CIs", ("serlens.cka.inference_figures", "plot_cka_changes"), ("estimator",)),
    ResultTable(CKA_DRIFT.name, "CKA of each checkpoint's layer with checkpoint 0, the previous checkpoint and "
                "a re-embedding (the noise floor)"),
    ResultTable(CKA_LAYERS.name, "layer x layer CKA per checkpoint"),
    ResultTable(PROBES.name, "layer-wise probe results", ("serlens.probe.figures", "plot_probe_f1")),
    ResultTable(PROBE_FEATURES.name, "per-eGeMAPS-feature ridge R² with its control and selectivity",
                ("serlens.probe.figures_detail", "plot_feature_r2")),
    ResultTable(PROBE_CLASSES.name, "per-class F1 of the best cell, eGeMAPS and the fine-tuned classifier"),
    ResultTable(PROBE_CONFUSION.name, "confusion matrices of the best cell, eGeMAPS and the classifier",
                ("serlens.probe.figures_detail", "plot_confusions")),
)}

#: Tables also served at ``/{name}`` (the paths of the first API).
TOP_LEVEL = (CKA.name, PROBES.name)

#: The ``format`` query parameter of the table routes (any other parameter is a column filter).
Format = Query("json", description="json (rows), csv, or png (the table's figure, one run's rows)")

#: How the table routes describe their filters in the document.
FILTERS_NOTE = "Any other query parameter is an equality filter on the column of that name (typed like it)."

#: matplotlib's pyplot is not thread-safe: one figure at a time per replica.
_FIGURE_LOCK = threading.Lock()


def table_responses(rows: Any) -> dict[int | str, dict[str, Any]]:
    """What a table route answers: ``rows`` as JSON, CSV or the figure; 400 for a bad filter."""
    return {**ok(rows, "text/csv", "image/png"), **errors(400, 404, 422)}


def parse_filters(name: str, params: Mapping[str, str]) -> dict[str, Any]:
    """Query parameters as equality filters on the table's columns, typed like the columns.

    Raises:
        InvalidRequestError: a parameter that is no column, or a value of the wrong type.
    """
    schema = table(name).schema
    filters: dict[str, Any] = {}
    for key, raw in params.items():
        if key == "format":
            continue
        if key not in schema.names:
            raise InvalidRequestError(f"{name}: no column {key!r}; columns: {', '.join(schema.names)}")
        kind = schema.field(key).type
        try:
            if pa.types.is_integer(kind):
                filters[key] = int(raw)
            elif pa.types.is_floating(kind):
                filters[key] = float(raw)
            elif pa.types.is_boolean(kind):
                filters[key] = {"true": True, "false": False}[raw.lower()]
            elif pa.types.is_string(kind):
                filters[key] = raw
            else:
                raise InvalidRequestError(f"{name}: column {key!r} ({kind}) cannot be filtered on")
        except (ValueError, KeyError) as err:
            raise InvalidRequestError(f"{name}: {key}={raw!r} is not a {kind}") from err
    return filters


def one_run(store: FeatureStore, rows: list[dict[str, Any]], filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows a figure shows: one run's.

    The caller's ``config_hash`` or ``train_key`` filter names the run; without one, the latest
    finished run (``serlens.shared.runs.latest_run``, the meaning the report uses too).
    """
    if not rows or {"config_hash", "train_key"} & set(filters):
        return rows
    try:
        run = latest_run(store)
    except NotFoundError:
        return rows
    return [r for r in rows if r.get("config_hash") == run["analysis_key"]]


def render_png(figure: tuple[str, str], rows: list[dict[str, Any]], **options: Any) -> bytes:
    """Draw rows with a figure function; the PNG bytes.

    Raises:
        NotFoundError: no rows to draw.
        ServiceError: the figure function wrote no PNG.
    """
    if not rows:
        raise NotFoundError("no stored results to draw; run `serlens run` first")
    module, function = figure
    plot = getattr(importlib.import_module(module), function)
    with _FIGURE_LOCK, tempfile.TemporaryDirectory() as tmp:
        plot(rows, Path(tmp) / "figure", **options)
        pngs = sorted(Path(tmp).rglob("*.png"))
        if not pngs:
            raise ServiceError(f"{module}.{function} wrote no PNG")
        return pngs[0].read_bytes()


def read_table(store: FeatureStore, name: str, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of a result table, filtered, ordered by run, checkpoint and layer where it has them."""
    columns = table(name).schema.names
    order = [c for c in ("train_key", "checkpoint_step", "layer") if c in columns]
    return store.read(name, filters=dict(filters), order_by=order).to_pylist()


def results_router(store: FeatureStore) -> APIRouter:
    """``GET /results``, ``GET /results/{table}`` and the top-level aliases; ``read`` scope."""
    router = APIRouter(tags=["results"], dependencies=[Depends(require("read"))], responses=errors(*COMMON_ERRORS))

    async def serve_table(name: str, request: Request, form: str) -> Response:
        spec = RESULT_TABLES.get(name)
        if spec is None:
            raise NotFoundError(f"no result table {name!r}; tables: {', '.join(RESULT_TABLES)}")
        filters = parse_filters(name, request.query_params)
        rows = await asyncio.to_thread(read_table, store, name, filters)
        if form == "png":
            if spec.figure is None:
                raise InvalidRequestError(f"{name} has no figure; use format=json or csv")
            options = {k: filters[k] for k in spec.figure_options if k in filters}
            png = await asyncio.to_thread(render_png, spec.figure, one_run(store, rows, filters), **options)
            return Response(png, media_type="image/png")
        if form == "csv":
            columns = list(rows[0]) if rows else table(name).schema.names
            return Response(rows_to_csv(columns, [list(r.values()) for r in rows]), media_type="text/csv")
        return JSONResponse(jsonable({"table": name, "rows": rows}))

    @router.get("/results", summary="The result tables served, with their columns", response_model=None,
                responses=ok(ResultTables))
    async def list_tables() -> dict[str, Any]:
        return {
            name: {"summary": t.summary, "columns": table(name).schema.names, "figure": t.figure is not None}
            for name, t in RESULT_TABLES.items()
        }

    @router.get(
        "/results/{name}",
        summary="Rows of a result table (JSON, CSV or PNG); any column is an equality filter",
        description=FILTERS_NOTE,
        responses=table_responses(TableRows),
    )
    async def results(
        request: Request,
        name: str = PathParam(description="a table of GET /results", examples=list(RESULT_TABLES)),
        format: Literal["json", "csv", "png"] = Format,
    ) -> Response:
        return await serve_table(name, request, format)

    @router.get("/schema", summary="Every table of the store: columns, types and what each means",
                response_model=list[TableDoc])
    async def schema() -> list[TableDoc]:
        return schema_listing()

    @router.get("/schema/{name}", summary="One table of the store: columns, types and what each means",
                response_model=TableDoc, responses=errors(404, 422))
    async def schema_of(name: str = PathParam(description="a table name", examples=["cka"])) -> TableDoc:
        return schema_listing(name)[0]

    def alias(name: str) -> Any:
        async def table_rows(request: Request, format: Literal["json", "csv", "png"] = Format) -> Response:
            return await serve_table(name, request, format)

        return table_rows

    for name in TOP_LEVEL:
        router.add_api_route(f"/{name}", alias(name), methods=["GET"], name=f"results_{name}",
                             summary=f"{RESULT_TABLES[name].summary} (as /results/{name})",
                             description=FILTERS_NOTE, responses=table_responses(table_rows(name)))
    return router
