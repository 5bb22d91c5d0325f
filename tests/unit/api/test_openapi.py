"""The OpenAPI document describes the API's own error bodies (the full check is schemathesis')."""

from __future__ import annotations

from serlens.api.responses import ErrorBody


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
