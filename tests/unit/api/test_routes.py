"""The ingress app in-process: authentication, scopes, bounded bodies, results, SQL, promotion."""

from __future__ import annotations

import pytest

from tests.unit.api.conftest import TRAIN_KEY


def test_healthz_needs_no_token_and_tells_nothing(app_client):
    response = app_client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/cka", "/results", "/results/probes", "/openapi.json", "/docs", "/models"])
def test_no_token_or_a_wrong_one_is_401(app_client, path):
    assert app_client.get(path).status_code == 401
    wrong = app_client.get(path, headers={"Authorization": "Bearer serlens_wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "AuthenticationError"
    basic = app_client.get(path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


def test_scopes_decide_403(app_client, as_caller):
    assert app_client.get("/cka", headers=as_caller("reader")).status_code == 200
    train = app_client.post("/train", json={"dataset": "tiny"}, headers=as_caller("reader"))
    assert train.status_code == 403 and "'train'" in train.json()["detail"]
    upload = app_client.post("/predict", files={"file": ("a.wav", b"RIFF")}, headers=as_caller("trainer"))
    assert upload.status_code == 403


def test_unauthenticated_upload_is_refused_before_its_body_is_read(app_client):
    # 50 MiB declared, far over max_upload_mb: the answer is 401, not 413 (auth runs first).
    response = app_client.post("/predict", content=b"\0" * 1024,
                               headers={"content-length": str(50 * 2**20), "content-type": "audio/wav"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"dataset": "tiny", "tracking": {"uri": "http://x"}},
        {"dataset": "tiny", "train": {"log_checkpoints_to_mlflow": True}},
        {"dataset": "tiny", "train": {"batch_size": 100000}},
        {"dataset": "/data/other"},
        {"dataset": "demo"},  # not on this API's allow-list
        {"config": {"dataset": {"kind": "demo"}}},
    ],
)
def test_train_body_beyond_hyperparameters_and_the_allow_list_is_422(app_client, as_caller, body):
    response = app_client.post("/train", json=body, headers=as_caller("trainer"))
    assert response.status_code == 422, response.text
    assert "problems" in response.json()


def test_results_by_name_with_typed_filters_json_and_csv(app_client, as_caller):
    headers = as_caller("reader")
    tables = app_client.get("/results", headers=headers).json()
    assert set(tables) >= {"cka", "probes"} and "layer" in tables["cka"]["columns"]
    rows = app_client.get("/results/cka", params={"estimator": "linear", "checkpoint_step": 10},
                          headers=headers).json()["rows"]
    assert [r["layer"] for r in rows] == [0, 1, 2, 3, 4] and rows[4]["value"] == pytest.approx(0.5)
    assert app_client.get("/cka", params={"estimator": "linear", "checkpoint_step": 10},
                          headers=headers).json()["rows"] == rows
    csv = app_client.get("/results/probes", params={"features": "egemaps", "format": "csv"}, headers=headers)
    assert csv.headers["content-type"].startswith("text/csv") and len(csv.text.splitlines()) == 3
    assert app_client.get("/results/cka", params={"layer": "two"}, headers=headers).status_code == 400
    assert app_client.get("/results/cka", params={"nope": "1"}, headers=headers).status_code == 400
    assert app_client.get("/results/checkpoints", headers=headers).status_code == 404


def test_sql_needs_read_and_answers(app_client, as_caller):
    query = {"query": "SELECT count(*) AS n FROM cka"}
    assert app_client.post("/sql", json=query).status_code == 401
    body = app_client.post("/sql", json=query, headers=as_caller("reader")).json()
    assert body["rows"] == [[20]]


def test_promotion_is_explicit_scoped_and_checked(app_client, as_caller, state):
    served = app_client.get("/models", headers=as_caller("reader")).json()["promotion"]
    assert (served["train_key"], served["checkpoint_step"]) == (TRAIN_KEY, 10)
    body = {"train_key": TRAIN_KEY, "checkpoint_step": 0}
    assert app_client.post("/models/promote", json=body, headers=as_caller("reader")).status_code == 403
    missing = app_client.post("/models/promote", json={**body, "checkpoint_step": 5}, headers=as_caller("trainer"))
    assert missing.status_code == 404
    extra = app_client.post("/models/promote", json={**body, "path": "/x"}, headers=as_caller("trainer"))
    assert extra.status_code == 422
    done = app_client.post("/models/promote", json=body, headers=as_caller("trainer"))
    assert done.status_code == 200 and done.json()["promotion"]["promoted_by"] == "trainer"
    state.checkpoints.ttl_s = 0
    assert state.checkpoints.resolve(None).checkpoint_step == 0
    # Put it back for the other tests.
    app_client.post("/models/promote", json={**body, "checkpoint_step": 10}, headers=as_caller("trainer"))
    assert state.checkpoints.resolve(None).checkpoint_step == 10
