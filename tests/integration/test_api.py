"""The HTTP API end to end: real Ray Serve, real services, real store, generated audio."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from serlens.embed import EmbedArgs, EmbedService
from serlens.predict import PredictArgs, PredictService
from serlens.shared.audio import decode
from serlens.shared.errors import NotFoundError
from serlens.shared.schema import EMOTIONS, egemaps_feature_names
from serlens.shared.store import FeatureStore
from serlens.shared.testing import voiced
from serlens.shared.workdir import Workdir
from tests.integration.conftest import MODEL_NAME, STEPS, TRAIN_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def encode(signal: np.ndarray, sampling_rate: int, kind: str = "wav") -> bytes:
    container, subtype = FORMATS[kind]
    buffer = io.BytesIO()
    sf.write(buffer, signal, sampling_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def clip(seed: int = 0, duration_s: float = 1.0, sampling_rate: int = 16_000) -> np.ndarray:
    return voiced(duration_s, f0_hz=120.0 + 15 * seed, sampling_rate=sampling_rate, seed=seed)


def upload(data: bytes, name: str = "clip.wav") -> dict:
    return {"file": (name, data, "application/octet-stream")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def client(api: str, tokens):
    """A caller with every scope."""
    with httpx.Client(base_url=api, timeout=180, headers=bearer(tokens["trainer"])) as c:
        yield c


@pytest.fixture(scope="module")
def anonymous(api: str):
    with httpx.Client(base_url=api, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def as_caller(api: str, tokens):
    """``as_caller(name)``: a client with that caller's token."""
    clients: list[httpx.Client] = []

    def make(name: str) -> httpx.Client:
        clients.append(httpx.Client(base_url=api, timeout=60, headers=bearer(tokens[name])))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


@pytest.fixture(scope="module")
def store(workdir) -> FeatureStore:
    return FeatureStore(workdir / "store")


@pytest.fixture(scope="module")
def train_job(client, workdir) -> str:
    """A tiny fine-tuning run (12 demo speakers x 6 emotions, 2 optimizer steps), submitted once."""
    response = client.post("/train", json={"dataset": "tiny-demo", "train": {"seed": 7}})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["job_id"].startswith("serlens-train-") and body["joined"] is False
    return body["job_id"]


def normalized_signal(client, data: bytes, name: str) -> np.ndarray:
    response = client.post("/normalize", params={"format": "json"}, files=upload(data, name))
    assert response.status_code == 200, response.text
    audio = base64.b64decode(response.json()["audio_wav_base64"])
    signal, rate = sf.read(io.BytesIO(audio), dtype="float32")
    assert rate == 16_000
    return signal


# -------------------------------------------------------------------- basics


def test_train_job_is_submitted_first_so_it_runs_while_the_rest_is_tested(train_job):
    assert train_job


# -------------------------------------------------------------------- who is calling (while the job runs)


def test_train_without_token_401_with_read_token_403(anonymous, as_caller):
    body = {"dataset": "tiny-demo"}
    response = anonymous.post("/train", json=body)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.post("/train", json=body, headers=bearer("serlens_not-a-token")).status_code == 401
    denied = as_caller("reader").post("/train", json=body)
    assert denied.status_code == 403 and denied.json()["error"] == "PermissionDeniedError"
    assert as_caller("listener").post("/train", json=body).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"dataset": "tiny-demo", "tracking": {"uri": "http://collector.example"}},
        {"dataset": "tiny-demo", "model": {"name": "/etc"}},
        {"dataset": "tiny-demo", "train": {"device": "cuda"}},
        {"dataset": "tiny-demo", "train": {"max_steps": 10**9}},
        {"dataset": "tiny-demo", "config": {"dataset": {"path": "/"}}},
        {"dataset": "../../etc/passwd"},
        {"dataset": "crema-d"},
    ],
)
def test_train_with_a_forbidden_key_or_value_is_422(client, body):
    response = client.post("/train", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] in ("RequestValidationError", "InvalidInputError")


def test_a_second_concurrent_job_is_429_and_an_identical_one_joins(client, as_caller, train_job):
    other = client.post("/train", json={"dataset": "tiny-demo", "train": {"seed": 8}})
    assert other.status_code == 429, other.text
    assert other.json()["error"] == "TooManyJobsError"
    same = client.post("/train", json={"dataset": "tiny-demo", "train": {"seed": 7}})
    assert same.status_code == 202 and same.json() == {**same.json(), "job_id": train_job, "joined": True}
    clash = as_caller("other-trainer").post("/train", json={"dataset": "tiny-demo", "train": {"seed": 7}})
    assert clash.status_code == 409, clash.text


def test_a_job_is_visible_only_to_its_owner(client, as_caller, train_job):
    assert client.get(f"/train/{train_job}").status_code == 200
    assert [j["job_id"] for j in client.get("/train").json()["jobs"]] == [train_job]
    stranger = as_caller("other-trainer")
    assert stranger.get(f"/train/{train_job}").status_code == 404
    assert stranger.get("/train").json()["jobs"] == []


def test_every_endpoint_but_healthz_needs_a_token(client, anonymous):
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for path, methods in paths.items():
        url = path.replace("{job_id}", "serlens-train-000000000000").replace("{name}", "cka")
        for method in methods:
            response = anonymous.request(method.upper(), url)
            expected = 200 if path == "/healthz" else 401
            assert response.status_code == expected, (method, path, response.text)
            checked += 1
    assert checked >= 15
    for unlisted in ("/openapi.json", "/docs", "/no-such-path"):
        assert anonymous.get(unlisted).status_code == 401


def test_healthz_and_docs(client, anonymous):
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for route in (
        "/normalize",
        "/egemaps",
        "/embed",
        "/predict",
        "/train",
        "/train/{job_id}",
        "/train/datasets",
        "/models",
        "/models/promote",
        "/results",
        "/results/{name}",
        "/cka",
        "/probes",
        "/sql",
        "/schema",
        "/schema/{name}",
        "/healthz",
    ):
        assert route in paths


def test_deployments_are_named_and_running(api):
    from ray import serve

    status = serve.status().applications["serlens"]
    assert status.status == "RUNNING"
    assert set(status.deployments) == {"Ingress", "Normalize", "Egemaps", "Embed", "Predict"}


# -------------------------------------------------------------------- the deployments, by handle


def handle(name: str):
    from ray import serve

    return serve.get_deployment_handle(name, app_name="serlens")


def test_normalize_and_egemaps_handles_answer_like_the_services(client):
    from serlens.egemaps.config import EgemapsArgs
    from serlens.egemaps.service import EgemapsService
    from serlens.normalize.config import NormalizeArgs
    from serlens.normalize.service import NormalizeService

    signal = clip(60)
    normalized, record = handle("Normalize").process_signal.remote(signal, 16_000, "h.wav").result()
    expected, expected_record = NormalizeService(config=NormalizeArgs().to_config()).process_signal(signal, 16_000)
    np.testing.assert_allclose(normalized, expected, atol=1e-6)
    assert record.lufs_after == pytest.approx(expected_record.lufs_after, abs=1e-6)
    features = handle("Egemaps").process_signal.remote(normalized, 16_000, "h.wav").result()
    reference = EgemapsService(config=EgemapsArgs().to_config()).process_signal(normalized, 16_000)
    assert list(features) == list(reference)
    for name, value in reference.items():
        assert features[name] == pytest.approx(value, rel=1e-5, abs=1e-6)
    with pytest.raises(Exception, match="InvalidAudioError|sampling rate"):
        handle("Egemaps").process_signal.remote(normalized, 8_000, "h.wav").result()


def test_embed_and_predict_handles_answer_like_the_services_and_pass_their_health_check(workdir):
    folder = str(Workdir(workdir).checkpoint_dir(TRAIN_KEY, 0))
    signal = clip(61)
    vectors = handle("Embed").embed_signal.remote(signal, 16_000, folder, [0, 2]).result()
    service = EmbedService(config=EmbedArgs(device="cpu").to_config(), model=folder)
    np.testing.assert_allclose(vectors, service.process_signal(signal, 16_000, layers=[0, 2]), atol=1e-4)
    probabilities = handle("Predict").process_signal.remote(signal, 16_000, folder, "h").result()
    expected = PredictService(config=PredictArgs(device="cpu").to_config(), checkpoint=folder)
    for label, value in expected.process_signal(signal, 16_000).items():
        assert probabilities[label] == pytest.approx(value, abs=1e-5)
    # The health checks run a forward pass of the model just used: they pass here.
    for name in ("Embed", "Predict", "Normalize", "Egemaps", "Ingress"):
        assert handle(name).check_health.remote().result() is None


# -------------------------------------------------------------------- audio routes


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_egemaps_accepts_every_container(client, kind):
    response = client.post("/egemaps", files=upload(encode(clip(1), 16_000, kind), f"clip.{kind}"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body["features"]) == list(egemaps_feature_names())
    assert all(isinstance(v, float) for v in body["features"].values())
    assert body["extractor_version"].startswith("opensmile")
    assert body["source"]["format"] == FORMATS[kind][0]


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_8khz_stereo_is_accepted_and_resampled(client, kind):
    stereo = np.stack([clip(2, sampling_rate=8_000), clip(3, sampling_rate=8_000)], axis=1)
    response = client.post(
        "/normalize",
        params={"format": "json"},
        files=upload(encode(stereo, 8_000, kind), f"stereo.{kind}"),
    )
    assert response.status_code == 200, response.text
    source = response.json()["source"]
    assert (source["format"], source["sampling_rate"], source["num_channels"]) == (
        FORMATS[kind][0],
        8_000,
        2,
    )
    # Lossy codecs pad a little; the decoded, resampled signal is still about one second at 16 kHz.
    assert source["duration_s"] == pytest.approx(1.0, abs=0.1)
    audio, rate = sf.read(
        io.BytesIO(base64.b64decode(response.json()["audio_wav_base64"])), dtype="float32"
    )
    assert rate == 16_000 and audio.ndim == 1 and len(audio) == pytest.approx(16_000, abs=1_600)


def test_normalize_wav_and_json_agree(client):
    data = encode(clip(4) * 0.1, 16_000)
    response = client.post("/normalize", files=upload(data))
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert float(response.headers["x-loudness-lufs-after"]) == pytest.approx(-23.0, abs=0.5)
    assert float(response.headers["x-loudness-gain-db"]) > 10  # the input was 20 dB quieter
    signal, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 16_000 and signal.shape == (16_000,)
    as_json = client.post("/normalize", params={"format": "json"}, files=upload(data)).json()
    assert as_json["loudness"]["lufs_after"] == pytest.approx(
        float(response.headers["x-loudness-lufs-after"])
    )
    assert np.array_equal(
        sf.read(io.BytesIO(base64.b64decode(as_json["audio_wav_base64"])), dtype="float32")[0],
        signal,
    )


def test_embed_default_layers_checkpoints_and_equality_with_the_service(client, workdir):
    data = encode(clip(5), 16_000)
    body = client.post("/embed", files=upload(data)).json()
    assert body["checkpoint"]["train_key"] == TRAIN_KEY and body["checkpoint"][
        "checkpoint_step"
    ] == max(STEPS)
    assert body["layers"] == [0, 1, 2, 3, 4]
    vectors = np.asarray(body["embeddings"], dtype=np.float32)
    assert vectors.shape == (5, 64)
    chosen = client.post("/embed", params={"layers": "0,3"}, files=upload(data)).json()
    assert chosen["layers"] == [0, 3]
    np.testing.assert_allclose(np.asarray(chosen["embeddings"]), vectors[[0, 3]], atol=1e-4)
    first = client.post("/embed", params={"checkpoint": 0}, files=upload(data)).json()
    assert first["checkpoint"]["checkpoint_step"] == 0
    assert not np.allclose(np.asarray(first["embeddings"]), vectors, atol=1e-3)
    # The same numbers as the plain service on the same normalised signal.
    service = EmbedService(
        config=EmbedArgs(device="cpu").to_config(), model=body["checkpoint"]["local_path"]
    )
    expected = service.process_signal(normalized_signal(client, data, "clip.wav"), 16_000)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_embed_batched_equals_one_by_one(client, api):
    datas = [encode(clip(10 + i, duration_s=0.6 + 0.15 * i), 16_000) for i in range(8)]
    alone = [np.asarray(client.post("/embed", files=upload(d)).json()["embeddings"]) for d in datas]

    async def together():
        async with httpx.AsyncClient(base_url=api, timeout=180, headers=client.headers) as ac:
            return await asyncio.gather(*(ac.post("/embed", files=upload(d)) for d in datas))

    for response, expected in zip(asyncio.run(together()), alone, strict=True):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(np.asarray(response.json()["embeddings"]), expected, atol=1e-4)


def test_embed_bad_parameters(client):
    data = encode(clip(6), 16_000)
    assert client.post("/embed", params={"checkpoint": 99}, files=upload(data)).status_code == 404
    bad_layer = client.post("/embed", params={"layers": "0,9"}, files=upload(data))
    assert bad_layer.status_code == 400 and "out of range" in bad_layer.json()["detail"]
    assert client.post("/embed", params={"layers": "zero"}, files=upload(data)).status_code == 400


def test_predict_probabilities_match_the_checkpoint(client):
    data = encode(clip(7), 16_000)
    body = client.post("/predict", files=upload(data)).json()
    probabilities = body["probabilities"]
    assert list(probabilities) == list(EMOTIONS)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert body["label"] == max(probabilities, key=probabilities.get)
    service = PredictService(
        config=PredictArgs(device="cpu").to_config(), checkpoint=body["checkpoint"]["local_path"]
    )
    expected = service.process_signal(normalized_signal(client, data, "clip.wav"), 16_000)
    for label in EMOTIONS:
        assert probabilities[label] == pytest.approx(expected[label], abs=1e-5)
    first = client.post("/predict", params={"checkpoint": 0}, files=upload(data)).json()
    assert first["checkpoint"]["checkpoint_step"] == 0
    assert first["probabilities"] != probabilities


# -------------------------------------------------------------------- the store


def test_store_true_writes_clip_features_and_lineage(client, store):
    stereo = np.stack([clip(20, sampling_rate=8_000), clip(21, sampling_rate=8_000)], axis=1)
    data = encode(stereo, 8_000)
    body = client.post("/egemaps", params={"store": "true"}, files=upload(data, "s.wav")).json()
    clip_id = body["source"]["clip_id"]
    clips = store.read("clips", filters={"clip_id": clip_id}).to_pylist()
    assert len(clips) == 1
    row = clips[0]
    assert row["dataset"] == "api" and row["audio_sha256"] == clip_id and row["config_hash"]
    assert (row["source_sampling_rate"], row["source_num_channels"], row["sampling_rate"]) == (
        8_000,
        2,
        16_000,
    )
    assert row["lufs_after"] == pytest.approx(-23.0, abs=0.5) and row["created_at"] is not None
    assert row["normalized_path"].startswith("audio/")  # relative to the workdir
    assert decode(store.root.parent / row["normalized_path"]).signal.shape == (16_000,)
    features = store.read("egemaps", filters={"clip_id": clip_id}).to_pylist()
    assert len(features) == 1 and features[0]["extractor_version"] == body["extractor_version"]
    for name, value in body["features"].items():
        assert features[0][name] == pytest.approx(value, rel=1e-5, abs=1e-6)

    embed = client.post(
        "/embed", params={"store": "true", "layers": "1,4"}, files=upload(data, "s.wav")
    ).json()
    rows = store.read(
        "embeddings", filters={"clip_id": clip_id}, order_by=["layer"]
    ).to_pylist()
    assert [r["layer"] for r in rows] == [1, 4]
    for r, vector in zip(rows, embed["embeddings"], strict=True):
        assert (r["train_key"], r["checkpoint_step"], r["model"], r["pooling"]) == (
            TRAIN_KEY,
            max(STEPS),
            MODEL_NAME,
            "mean",
        )
        assert r["config_hash"] and r["created_at"] is not None
        np.testing.assert_allclose(r["embedding"], vector, rtol=1e-6)


@pytest.mark.parametrize("route", ["/normalize", "/predict"])
def test_store_true_on_normalize_and_predict_writes_the_clip(client, store, route):
    data = encode(clip(22 if route == "/normalize" else 23), 16_000)
    response = client.post(
        route, params={"store": "true", "format": "json"}, files=upload(data, "n.wav")
    )
    assert response.status_code == 200, response.text
    clip_id = response.json()["stored"][0]["clip_id"]
    rows = store.read(
        "clips", filters={"clip_id": clip_id, "dataset": "api"}
    ).to_pylist()
    assert len(rows) == 1 and rows[0]["loudness_policy"] and rows[0]["normalized_sha256"]


def test_fifty_concurrent_requests_all_answer_and_leave_no_duplicates(api, client, store):
    datas = [encode(clip(30 + i), 16_000) for i in range(5)]
    requests = [("/egemaps", {"store": "true"}, datas[i % 5]) for i in range(25)]
    requests += [("/embed", {"store": "true", "layers": "0,2"}, datas[i % 5]) for i in range(25)]

    async def fire():
        async with httpx.AsyncClient(base_url=api, timeout=240, headers=client.headers) as ac:
            return await asyncio.gather(
                *(ac.post(path, params=params, files=upload(d)) for path, params, d in requests)
            )

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 50, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    ids = sorted({r.json()["source"]["clip_id"] for r in responses})
    assert len(ids) == 5
    clips = store.read("clips", filters={"clip_id": ids}).to_pylist()
    assert sorted(r["clip_id"] for r in clips) == ids
    egemaps = store.read(
        "egemaps", filters={"clip_id": ids}, columns=["clip_id"]
    ).to_pylist()
    assert sorted(r["clip_id"] for r in egemaps) == ids
    embeddings = store.read(
        "embeddings", filters={"clip_id": ids}, columns=["clip_id", "layer"]
    ).to_pylist()
    assert sorted((r["clip_id"], r["layer"]) for r in embeddings) == sorted(
        (i, layer) for i in ids for layer in (0, 2)
    )


# -------------------------------------------------------------------- bad uploads


def wav_header_only() -> bytes:
    return encode(np.zeros(0, dtype=np.float32), 16_000)


def float_wav_with_nan() -> bytes:
    signal = clip(42)
    signal[100:110] = np.nan
    buffer = io.BytesIO()
    sf.write(buffer, signal, 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "case",
    ["empty", "truncated", "text", "zero_seconds", "ten_minutes", "too_short", "nan", "silence"],
)
def test_bad_audio_is_422(client, case):
    whole = encode(clip(40), 16_000)
    data = {
        "empty": b"",
        "truncated": whole[: len(whole) // 2],
        "text": b"this is a text file, not audio\n" * 10,
        "zero_seconds": wav_header_only(),
        # A real 10-minute recording (a quiet tone, FLAC keeps it small) over max_duration_s = 60.
        "ten_minutes": encode(
            (0.05 * np.sin(2 * np.pi * 220 * np.arange(600 * 16_000) / 16_000)).astype(np.float32),
            16_000,
            "flac",
        ),
        "too_short": encode(clip(40, duration_s=0.2), 16_000),
        "nan": float_wav_with_nan(),
        # Digital silence: the loudness normalisation refuses it (silence_policy = reject).
        "silence": encode(np.zeros(16_000, dtype=np.float32), 16_000),
    }[case]
    response = client.post("/egemaps", files=upload(data, f"{case}.wav"))
    assert response.status_code == 422, response.text
    assert response.json()["error"] in ("AudioDecodeError", "InvalidAudioError")
    assert f"{case}.wav" in response.json()["detail"]


def test_unsupported_container_is_415(client):
    buffer = io.BytesIO()
    sf.write(buffer, clip(41), 16_000, format="AIFF", subtype="PCM_16")
    response = client.post("/egemaps", files=upload(buffer.getvalue(), "clip.aiff"))
    assert response.status_code == 415 and response.json()["error"] == "UnsupportedMediaTypeError"


def test_uploads_over_the_limit_are_413(client):
    limit = 3 * 2**20
    declared = client.post("/egemaps", files=upload(b"\0" * (limit + 2**20), "big.wav"))
    assert declared.status_code == 413 and declared.json()["error"] == "PayloadTooLargeError"
    # Within the multipart allowance of Content-Length, but the file is over: the read sees it.
    read = client.post("/egemaps", files=upload(b"\0" * (limit + 1024), "big.wav"))
    assert read.status_code == 413 and "big.wav" in read.json()["detail"]

    def chunks():
        for _ in range(5):
            yield b"\0" * 2**20

    chunked = client.post(
        "/egemaps", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert chunked.status_code == 413


# -------------------------------------------------------------------- results and SQL


def test_cka_and_probes_as_json_and_png(client):
    cka = client.get("/cka").json()["rows"]
    assert len(cka) == len(STEPS) * 5 * 2
    linear = client.get("/cka", params={"estimator": "linear", "checkpoint_step": 10}).json()[
        "rows"
    ]
    assert [r["layer"] for r in linear] == [0, 1, 2, 3, 4]
    assert linear[4]["value"] == pytest.approx(0.5)
    probes = client.get("/probes", params={"features": "embeddings"}).json()["rows"]
    assert len(probes) == len(STEPS) * 5 * 2
    png = client.get("/cka", params={"format": "png", "estimator": "linear"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    png = client.get("/probes", params={"format": "png"})
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_sql_json_and_csv(client):
    query = "SELECT checkpoint_step, count(*) AS n FROM cka GROUP BY 1 ORDER BY 1"
    body = client.post("/sql", json={"query": query}).json()
    assert body["columns"] == ["checkpoint_step", "n"] and body["rows"] == [[0, 10], [10, 10]]
    csv_text = client.post("/sql", json={"query": query, "format": "csv"}).text
    assert csv_text.splitlines() == ["checkpoint_step,n", "0,10", "10,10"]


def test_schema_lists_every_table_column_and_meaning(client):
    from serlens.shared.column_docs import schema_listing

    assert client.get("/schema").json() == schema_listing()
    cka = client.get("/schema/cka").json()
    assert cka["keys"][0] == "config_hash" and {"name", "type", "nullable", "description"} == set(cka["columns"][0])
    missing = client.get("/schema/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "QueryRejectedError"),
        ("COPY (SELECT * FROM cka) TO '/tmp/serlens-stolen.csv'", "QueryRejectedError"),
        ("ATTACH '/tmp/serlens-other.duckdb' AS other", "QueryRejectedError"),
        ("INSTALL httpfs", "QueryRejectedError"),
        ("SELECT 1; SELECT 2", "QueryRejectedError"),
        (
            "SELECT count(*) FROM range(1000000000000) a, range(1000000000000) b",
            "QueryTimeoutError",
        ),
    ],
)
def test_hostile_sql_is_400_and_the_api_stays_up(client, query, error):
    started = time.monotonic()
    response = client.post("/sql", json={"query": query})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error and response.json()["detail"]
    assert time.monotonic() - started < 30  # sql_timeout_s = 2
    assert client.get("/healthz").status_code == 200


# -------------------------------------------------------------------- training jobs


def test_unknown_jobs_are_404(client):
    assert client.get("/train/serlens-train-000000000000").status_code == 404
    assert client.get("/train/not-a-job-id").status_code == 422


def test_training_changes_the_served_model_only_by_promotion(client, as_caller, train_job, store):
    deadline = time.monotonic() + 240
    while True:
        status = client.get(f"/train/{train_job}").json()
        if status["state"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status["state"] == "SUCCEEDED", status["logs_tail"]
    assert status["train_key"] and status["mlflow_run_id"] and status["dataset"] == "tiny-demo"
    assert [c["checkpoint_step"] for c in status["checkpoints"]] == [0, 1, 2]
    assert {m["name"] for m in status["metrics"]} >= {"train_loss", "val_loss"}
    assert any("fine-tuned" in line for line in status["logs_tail"])
    data = encode(clip(50), 16_000)
    # Trained, not promoted: /predict still serves the promoted checkpoint.
    served = client.post("/predict", files=upload(data)).json()["checkpoint"]
    assert (served["train_key"], served["checkpoint_step"]) == (TRAIN_KEY, max(STEPS))
    promotion = {"train_key": status["train_key"], "checkpoint_step": 2, "note": "test"}
    assert as_caller("reader").post("/models/promote", json=promotion).status_code == 403
    missing = client.post("/models/promote", json={**promotion, "checkpoint_step": 99})
    assert missing.status_code == 404
    promoted = client.post("/models/promote", json=promotion)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["promotion"]["promoted_by"] == "trainer"
    assert as_caller("reader").get("/models").json()["promotion"]["train_key"] == status["train_key"]
    time.sleep(2.5)  # the ingress re-reads the promotion at most every 2 s
    body = client.post("/predict", files=upload(data)).json()
    assert (body["checkpoint"]["train_key"], body["checkpoint"]["checkpoint_step"]) == (
        status["train_key"],
        2,
    )


def test_submissions_racing_through_two_replicas_admit_one_and_the_run_stays_off_the_head(api, api_args, store):
    """Two replicas submitting at once: the cluster's ledger admits one (limit 1), the other 429.

    No job service is involved (nothing but the operator may reach port 8265 on a cluster):
    the run is a Ray task with the driver resources, and stopping it stops its process.
    """
    import ray
    from ray.util.state import list_tasks

    from serlens.api.config import ApiArgs
    from serlens.api.jobs import TrainJobs
    from serlens.api.train_request import TrainRequest, prepare_config
    from serlens.shared.errors import TooManyJobsError

    config = ApiArgs.model_validate(api_args).to_config()
    replicas = [TrainJobs(config, store), TrainJobs(config, store)]
    assert replicas[0].active() == []  # the fixture's job has finished: one slot is free
    requests = [prepare_config(TrainRequest(dataset="tiny-demo", train={"seed": seed}), config)
                for seed in (11, 12)]
    barrier = threading.Barrier(2)

    def submit(jobs: TrainJobs, request: tuple) -> object:
        barrier.wait()
        try:
            return jobs.submit(request[0], request_key=request[1], owner="trainer", dataset="tiny-demo")
        except TooManyJobsError as err:
            return err

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(submit, replicas, requests))
    admitted = [a for a in answers if isinstance(a, dict)]
    assert len(admitted) == 1 and sum(isinstance(a, TooManyJobsError) for a in answers) == 1, answers
    job_id = admitted[0]["job_id"]
    assert admitted[0]["joined"] is False
    assert [j["job_id"] for j in replicas[1].active()] == [job_id]  # every replica sees the one ledger
    address = ray.get_runtime_context().gcs_address
    deadline = time.monotonic() + 30  # task events reach the state API within seconds
    while not (tasks := list_tasks(address=address, filters=[("name", "=", job_id)], detail=True)):
        assert time.monotonic() < deadline, "the run's task never showed up"
        time.sleep(1)
    (task,) = tasks
    assert task.required_resources.get("serlens_train_driver") == 1.0
    assert task.required_resources.get("CPU") == pytest.approx(0.1)
    with pytest.raises(NotFoundError):
        replicas[1].stop(job_id, owner="other-trainer")
    assert replicas[1].stop(job_id, owner="trainer") is True
    assert replicas[0].active() == []
    assert replicas[0].status(job_id, owner="trainer")["state"] == "STOPPED"
    deadline = time.monotonic() + 60  # the task ends once its `serlens train` process has exited
    by_name = [("name", "=", job_id)]
    while any(t.state not in ("FINISHED", "FAILED") for t in list_tasks(address=address, filters=by_name)):
        assert time.monotonic() < deadline
        time.sleep(1)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    from tests.support.audio_bombs import upload_bombs

    return upload_bombs(hours=2.0)


def test_upload_bombs_get_a_named_answer_fast_through_the_served_app(client, bombs):
    # Hours of silent FLAC, Vorbis, Opus and MP3, a WAV at 1 Hz, an 8-channel 96 kHz header that
    # declares hours, every other container: each a 413/415/422 naming the problem, within 2 s.
    for name, data in bombs.items():
        started = time.monotonic()
        response = client.post("/egemaps", files=upload(data, f"{name}.bin"))
        elapsed = time.monotonic() - started
        assert response.status_code in (413, 415, 422), (name, response.status_code, response.text[:300])
        assert response.json()["error"] and elapsed < 2.0, (name, elapsed)
