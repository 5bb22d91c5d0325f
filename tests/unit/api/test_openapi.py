"""The OpenAPI document names every body the API sends, and real bodies match (the full check is schemathesis')."""

from __future__ import annotations

import inspect
import io
import json
import re
from types import SimpleNamespace

import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from ray.serve.batching import _BatchQueue

from serlens.api.bodies import (
    EgemapsFeatures,
    Embeddings,
    Health,
    NormalizedAudio,
    Prediction,
    Promoted,
    ResultTables,
    ServedModel,
    SqlResult,
    TableRows,
    TrainDatasets,
    TrainJobList,
    TrainJobStatus,
    TrainSubmitted,
    table_rows,
)
from serlens.api.job_registry import JobRecord
from serlens.api.responses import ErrorBody
from serlens.api.routes import IngressState, create_app
from serlens.egemaps.app import EgemapsDeployment
from serlens.embed.app import EmbedDeployment
from serlens.normalize.app import NormalizeDeployment
from serlens.predict.app import PredictDeployment
from serlens.shared.testing import voiced
from tests.unit.api.conftest import TRAIN_KEY

JOB_ID = "serlens-train-0123456789ab"


def test_every_error_response_is_documented_as_error_body(app_client, as_caller):
    document = app_client.get("/openapi.json", headers=as_caller("reader")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert set(document["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "detail"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code.startswith(("4", "5"))}
            assert "413" in errors, f"{method} {path}"
            if path != "/healthz":
                assert {"401", "403"} <= set(errors), f"{method} {path}"
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in errors, f"{method} {path}"
            for code, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, f"{method} {path} {code}"


def test_body_that_cannot_be_parsed_and_unknown_paths_answer_in_the_error_shape(app_client, as_caller):
    broken = app_client.post("/sql", content=b"{not json", headers={**as_caller("reader"),
                                                                    "content-type": "application/json"})
    assert broken.status_code in (400, 422)
    ErrorBody.model_validate(broken.json())
    missing = app_client.get("/no-such-path", headers=as_caller("reader"))
    assert missing.status_code == 404
    assert ErrorBody.model_validate(missing.json()).error == "NotFoundError"
    wrong_method = app_client.delete("/sql", headers=as_caller("reader"))
    assert wrong_method.status_code == 405
    assert ErrorBody.model_validate(wrong_method.json()).error == "MethodNotAllowedError"


def test_audio_uploads_are_one_multipart_schema_with_a_binary_file_part(app_client, as_caller):
    document = app_client.get("/openapi.json", headers=as_caller("reader")).json()
    upload = document["components"]["schemas"]["AudioUpload"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["format"] == "binary"
    assert not [name for name in document["components"]["schemas"] if name.startswith("Body_")]
    for path in ("/normalize", "/egemaps", "/embed", "/predict"):
        form = document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert form["schema"] == {"$ref": "#/components/schemas/AudioUpload"}
        assert "audio/wav" in form["encoding"]["file"]["contentType"]


# ------------------------------------------------------------------ success bodies


def success_schemas(document: dict) -> dict[str, dict]:
    """``"METHOD path status" -> schema`` of every JSON success response."""
    return {
        f"{method.upper()} {path} {code}": response["content"]["application/json"]["schema"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for code, response in operation["responses"].items()
        if code.startswith("2") and "application/json" in response.get("content", {})
    }


def described(document: dict, name: str, seen: set[str]) -> list[str]:
    """Fields of component ``name`` (and of the components it names) without a description."""
    if name in seen:
        return []
    seen.add(name)
    component = document["components"]["schemas"][name]
    missing = [f"{name}.{field}" for field, prop in component.get("properties", {}).items()
               if not prop.get("description")]
    for ref in re.findall(r"#/components/schemas/(\w+)", json.dumps(component)):
        missing += described(document, ref, seen)
    return missing


def test_every_success_body_is_a_named_schema_with_every_field_described(app_client, as_caller):
    document = app_client.get("/openapi.json", headers=as_caller("reader")).json()
    schemas = success_schemas(document)
    assert len(schemas) == sum(len(operations) for operations in document["paths"].values())
    seen: set[str] = set()
    for operation, schema in schemas.items():
        schema = schema.get("items", schema) if schema.get("type") == "array" else schema  # /schema: a list
        assert set(schema) == {"$ref"}, f"{operation}: {schema}"
        name = schema["$ref"].rsplit("/", 1)[-1]
        component = document["components"]["schemas"][name]
        assert component.get("description"), f"{operation}: {name} has no description"
        assert "properties" in component or "$ref" in component.get("additionalProperties", {}), name
        assert described(document, name, seen) == [], operation
    for path, media_types in [("/normalize", {"audio/wav"}), ("/sql", {"text/csv"}),
                              ("/cka", {"text/csv", "image/png"}), ("/results/{name}", {"text/csv", "image/png"})]:
        operation = document["paths"][path].get("get") or document["paths"][path]["post"]
        assert media_types < set(operation["responses"]["200"]["content"]), path


def test_result_and_sql_bodies_match_their_models(app_client, as_caller):
    headers = as_caller("reader")
    bodies = {}
    for path, model in [("/results", ResultTables), ("/results/probes", TableRows), ("/cka", table_rows("cka")),
                        ("/probes", table_rows("probes"))]:
        response = app_client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        bodies[path] = model.model_validate_json(response.content, strict=True)
    assert bodies["/cka"].rows and bodies["/probes"].rows
    sql = app_client.post("/sql", json={"query": "SELECT * FROM cka LIMIT 3"}, headers=headers)
    assert SqlResult.model_validate_json(sql.content, strict=True).row_count == 3
    Health.model_validate_json(app_client.get("/healthz").content, strict=True)


def test_model_bodies_match_their_models(app_client, as_caller):
    served = app_client.get("/models", headers=as_caller("reader"))
    assert ServedModel.model_validate_json(served.content, strict=True).promotion is not None
    again = {"train_key": TRAIN_KEY, "checkpoint_step": served.json()["promotion"]["checkpoint_step"]}
    promoted = app_client.post("/models/promote", json=again, headers=as_caller("trainer"))
    assert promoted.status_code == 200, promoted.text
    Promoted.model_validate_json(promoted.content, strict=True)


@pytest.fixture
def ledger(state, monkeypatch):
    """The training ledger replaced by one run of ``trainer``'s that has written the demo's checkpoints."""
    record = JobRecord(JOB_ID, "serlens train --config c.yaml", {"owner": "trainer", "dataset": "tiny"})
    record.logs.extend(["starting", f"fine-tuning: train key {TRAIN_KEY}"])
    answers = {"admit": {"outcome": "admitted", "job": record.public(), "active": 1},
               "jobs": [record.public()], "get": record.public(with_logs=True)}
    monkeypatch.setattr(state.jobs, "_call", lambda method, *args, **kwargs: answers[method])


def test_training_bodies_match_their_models(app_client, as_caller, ledger):
    headers = as_caller("trainer")
    submitted = app_client.post("/train", json={"dataset": "tiny"}, headers=headers)
    assert submitted.status_code == 202, submitted.text
    TrainSubmitted.model_validate_json(submitted.content, strict=True)
    TrainJobList.model_validate_json(app_client.get("/train", headers=headers).content, strict=True)
    TrainDatasets.model_validate_json(app_client.get("/train/datasets", headers=headers).content, strict=True)
    status = app_client.get(f"/train/{JOB_ID}", headers=headers)
    assert status.status_code == 200, status.text
    body = TrainJobStatus.model_validate_json(status.content, strict=True)
    assert [c.checkpoint_step for c in body.checkpoints] == [0, 10]


class LocalHandle:
    """A deployment object behind the handle interface the ingress uses: ``await handle.method.remote(...)``."""

    def __init__(self, deployment):
        self.deployment = deployment

    def __getattr__(self, name: str):
        method = getattr(self.deployment, name)

        async def remote(*args, **kwargs):
            result = method(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return SimpleNamespace(remote=remote)


@pytest.fixture(scope="module")
def audio_client(state, tokens):
    """The app over the real deployment classes, run in this process (no Ray)."""
    handles = {"normalize": NormalizeDeployment({}), "egemaps": EgemapsDeployment({}),
               "embed": EmbedDeployment({"device": "cpu"}), "predict": PredictDeployment({"device": "cpu"})}
    local = IngressState(config=state.config, **{name: LocalHandle(d) for name, d in handles.items()})
    with pytest.MonkeyPatch.context() as patch, \
            TestClient(create_app(local), headers={"Authorization": f"Bearer {tokens['listener']}"}) as client:
        # serve.batch asks for the replica's settings only to warn about its batch size.
        patch.setattr(_BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
        yield client


def test_audio_bodies_match_their_models(audio_client):
    buffer = io.BytesIO()
    sf.write(buffer, voiced(1.0, sampling_rate=22_050), 22_050, format="WAV", subtype="PCM_16")
    files = {"file": ("voiced.wav", buffer.getvalue(), "audio/wav")}
    for path, params, model in [("/normalize", {"format": "json"}, NormalizedAudio), ("/egemaps", {}, EgemapsFeatures),
                                ("/embed", {"layers": "0,2"}, Embeddings), ("/predict", {}, Prediction)]:
        response = audio_client.post(path, params={**params, "store": "true"}, files=files)
        assert response.status_code == 200, response.text
        body = model.model_validate_json(response.content, strict=True)
        assert body.source.sampling_rate == 22_050 and body.stored[0].table == "clips", path
