"""`serlens run` end to end: real local Ray, DuckDB file, MLflow on sqlite, tiny random WavLM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.store_rows import open_catalogue

from serlens.shared.audio import write_wav
from serlens.shared.testing import voiced

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = [
    "--set",
    "dataset.demo_speakers=12",
    "--set",
    "dataset.demo_sentences_per_emotion=3",
    "--set",
    "train.max_steps=8",
    "--set",
    "train.grad_accum_steps=1",
    "--set",
    "train.eval_every_steps=2",
    "--set",
    "train.checkpoint_every_steps=4",
    "--set",
    "probe.seeds=3",
    "--set",
    "split.holdout_fraction=0.5",  # 4 speakers in subset 3: enough for speaker-grouped probes
]


def serlens(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "serlens.pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("study")
    started = time.perf_counter()
    first = serlens("run", "--workdir", str(workdir), "--quiet", *SMALL)
    first_s = time.perf_counter() - started
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-6000:]
    return {"workdir": workdir, "first": first, "first_s": first_s}


def test_run_prints_where_everything_is(study: dict) -> None:
    out = study["first"].stdout
    for word in ("report", "figures", "feature store", "MLflow", "serlens sql"):
        assert word in out


def test_tables_hold_the_whole_study(study: dict) -> None:
    with open_catalogue(study["workdir"]) as con:
        clips = con.execute(
            "SELECT subset, count(*) n, count(DISTINCT speaker) s FROM clips GROUP BY subset ORDER BY 1"
        ).fetchall()
        assert sum(n for _, n, _ in clips) == 12 * 6 * 3
        assert [s for s, _, _ in clips] == [1, 2, 3]
        overlap = con.execute(
            "SELECT count(*) FROM (SELECT speaker FROM clips GROUP BY speaker HAVING count(DISTINCT subset) > 1)"
        ).fetchone()[0]
        assert overlap == 0
        lufs = con.execute(
            "SELECT min(lufs_after), max(lufs_after) FROM clips WHERE loudness_policy = 'normalized'"
        ).fetchone()
        assert -23.1 < lufs[0] and lufs[1] < -22.9
        limited = con.execute(
            "SELECT count(*), max(lufs_after) FROM clips WHERE loudness_policy = 'limited'"
        ).fetchone()
        assert limited[0] == 0 or limited[1] < -23.0  # gain lowered to keep the peak in range
        assert con.execute("SELECT max(peak_dbfs) FROM clips").fetchone()[0] <= -0.1 + 1e-6
        n3 = dict((s, n) for s, n, _ in clips)[3]
        ege = con.execute("SELECT count(*) FROM egemaps").fetchone()[0]
        assert ege == n3
        cols = [r[0] for r in con.execute("DESCRIBE egemaps").fetchall()]
        assert "F0semitoneFrom27.5Hz_sma3nz_amean" in cols and "equivalentSoundLevel_dBp" in cols
        steps = [
            r[0] for r in con.execute("SELECT checkpoint_step FROM checkpoints ORDER BY 1").fetchall()
        ]
        assert steps == [0, 4, 8]
        emb = con.execute(
            "SELECT count(*), count(DISTINCT layer), min(len(embedding)) FROM embeddings"
        ).fetchone()
        assert emb == (n3 * 3 * 5, 5, 64)
        cka = con.execute(
            "SELECT count(*), count(DISTINCT estimator), min(value), max(value) FROM cka"
        ).fetchone()
        assert cka[0] == 3 * 5 * 2 and cka[1] == 2 and cka[3] <= 1.0 + 1e-9
        probes = con.execute("SELECT features, count(*) FROM probes GROUP BY 1 ORDER BY 1").fetchall()
        # (linear, MLP, MLP control) x (best, stop weights) x 3 seeds per cell
        assert probes == [("egemaps", 3 * 2 * 3), ("embeddings", 3 * 5 * 3 * 2 * 3)]
        assert con.execute("SELECT DISTINCT protocol FROM probes").fetchall() == [("grouped_cv",)]
        features = con.execute("SELECT count(*), count(DISTINCT target) FROM probe_features").fetchone()
        assert features == (3 * 5 * 88, 88)
        sources = con.execute("SELECT DISTINCT source FROM probe_classes ORDER BY 1").fetchall()
        assert [s for (s,) in sources] == ["best_cell", "classifier", "egemaps"]
        lineage = con.execute(
            "SELECT count(*) FROM embeddings WHERE config_hash IS NULL OR created_at IS NULL"
        ).fetchone()[0]
        assert lineage == 0


def test_figures_and_report(study: dict) -> None:
    figures = study["workdir"] / "figures"
    for stem in ("training", "cka_egemaps", "probe_f1", "probe_feature_r2", "probe_confusion", "loudness"):
        assert (figures / f"{stem}.png").stat().st_size > 10_000, stem
        assert (figures / f"{stem}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    page = (study["workdir"] / "report.html").read_text()
    assert (
        "data:image/png;base64," in page
        and "randomly initialised" in page
        and "Package versions" in page
    )


def test_mlflow_has_metrics_checkpoints_models_and_the_evaluation(study: dict) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{study['workdir'] / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    [run] = client.search_runs(experiments, filter_string="tags.serlens = 'trainer'")
    assert {"train_loss", "val_loss", "val_f1_macro"} <= set(run.data.metrics)
    assert run.info.run_name.startswith("tiny-random-wavlm · demo · lr ")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert artifacts == [
        "checkpoints/step-000000",
        "checkpoints/step-000004",
        "checkpoints/step-000008",
    ]
    models = {o.step: o.model_id for o in run.outputs.model_outputs}
    assert sorted(models) == [0, 4, 8]
    assert client.get_model_version_by_alias("serlens-ser", "champion").run_id == run.info.run_id
    # The analyses: one evaluation run, the checkpoint models as its inputs, their summaries on the models.
    [evaluation] = client.search_runs(experiments, filter_string="tags.serlens = 'analysis'")
    linked = client.get_run(evaluation.info.run_id).inputs.model_inputs  # search_runs leaves them out
    assert {m.model_id for m in linked} == set(models.values())
    on_final = {m.key for m in client.get_logged_model(models[8]).metrics if m.run_id == evaluation.info.run_id}
    assert {"cka_linear_max", "probe_f1_macro_max"} <= on_final
    assert "report/report.html" in [a.path for a in client.list_artifacts(evaluation.info.run_id, "report")]


def test_a_models_uri_that_does_not_resolve_stops_the_run_before_any_work(tmp_path: Path) -> None:
    failed = serlens("run", "--workdir", str(tmp_path), "--quiet", "--set", "model.name=models:/nobody@champion")
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "models:/nobody@champion" in failed.stdout + failed.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "demo-corpus").exists()


def test_second_run_reuses_the_store(study: dict) -> None:
    tables = ("clips", "egemaps", "embeddings", "checkpoints", "cka", "probes")

    def counts() -> dict[str, int]:
        with open_catalogue(study["workdir"]) as con:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    before = counts()
    started = time.perf_counter()
    again = serlens("run", "--workdir", str(study["workdir"]), "--quiet", *SMALL)
    second_s = time.perf_counter() - started
    assert again.returncode == 0, again.stderr[-4000:]
    assert "reused from the store" in again.stdout
    assert counts() == before
    assert second_s < study["first_s"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study['workdir'] / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert len(client.search_runs(experiments, filter_string="tags.serlens = 'analysis'")) == 1  # not logged twice


def test_sql_command(study: dict) -> None:
    out = serlens(
        "sql",
        "--workdir",
        str(study["workdir"]),
        "--format",
        "json",
        "SELECT subset, count(*) AS n FROM clips GROUP BY subset ORDER BY subset",
    )
    assert out.returncode == 0, out.stderr
    assert [r["subset"] for r in json.loads(out.stdout)] == [1, 2, 3]
    hostile = serlens(
        "sql", "--workdir", str(study["workdir"]), "SELECT * FROM read_csv('/etc/passwd')"
    )
    # Refused by the sandbox, naming why and no path (messages never leak one).
    assert hostile.returncode == 2 and "file system operations are disabled" in hostile.stderr
    assert "/etc/passwd" not in hostile.stderr


def test_a_copied_workdir_answers_sql_report_and_duckdb_where_it_lands(study: dict, tmp_path: Path) -> None:
    original = study["workdir"]
    copy = tmp_path / "elsewhere" / "work"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns("*.lock"))
    hidden = original.with_name(original.name + "-hidden")
    original.rename(hidden)  # nothing may still point at the original
    try:
        out = serlens("sql", "--workdir", str(copy), "--format", "json",
                      "SELECT count(*) AS n FROM latest_clips")
        assert out.returncode == 0 and json.loads(out.stdout)[0]["n"] == 12 * 6 * 3, out.stderr
        (copy / "report.html").unlink()
        report = serlens("report", "--workdir", str(copy))
        assert report.returncode == 0 and (copy / "report.html").is_file(), report.stderr[-3000:]
        with open_catalogue(copy) as con:  # an outside DuckDB client: no rewrite of the views needed
            clips = con.execute("SELECT normalized_path, source_path FROM latest_clips").fetchall()
            checkpoints = con.execute("SELECT local_path FROM latest_checkpoints").fetchall()
        # Rows name the workdir's files relative to it, beside the original source.
        assert clips and all(p.startswith("audio/") and (copy / p).is_file() and Path(src).is_absolute()
                             for p, src in clips)
        assert checkpoints and all(p.startswith("checkpoints/") and (copy / p / "config.json").is_file()
                                   for (p,) in checkpoints)
    finally:
        hidden.rename(original)


def test_bad_manifest_names_every_culprit_and_writes_nothing(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = ["path,label,speaker,gender"]
    for i in range(12):
        write_wav(audio / f"ok{i}.wav", voiced(1.0, seed=i), 16_000, subtype="PCM_16")
        # every speaker says both labels, so each subset has both once the bad files are skipped
        rows.append(f"audio/ok{i}.wav,{['ANG', 'SAD'][i // 6]},s{i % 6},{'F' if i % 6 < 3 else 'M'}")
    (audio / "empty.wav").write_bytes(b"")
    write_wav(audio / "short.wav", voiced(0.2, seed=1), 16_000, subtype="PCM_16")
    write_wav(audio / "silent.wav", np.zeros(16_000, dtype=np.float32), 16_000, subtype="PCM_16")
    rows += [
        "audio/empty.wav,ANG,s0,F",
        "audio/short.wav,SAD,s1,F",
        "audio/silent.wav,SAD,s2,F",
        "audio/missing.wav,ANG,s3,M",
        "audio/ok0.wav,BORED,s4,M",
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    workdir = tmp_path / "work"
    out = serlens(
        "run",
        "--workdir",
        str(workdir),
        "--quiet",
        "--set",
        "dataset.kind=manifest",
        "--set",
        f"dataset.path={manifest}",
        "--set",
        "dataset.labels=[ANG, SAD]",
    )
    assert out.returncode == 2
    for culprit in ("empty.wav", "short.wav", "silent.wav", "missing.wav", "BORED"):
        assert culprit in out.stderr, culprit
    assert not list((workdir / "store" / "tables" / "clips").rglob("part-2*.parquet"))

    # --skip-invalid: the same data goes through; what was left out, and why, is in the store.
    skipped = serlens("train", "--workdir", str(workdir), "--quiet", "--skip-invalid",
                      "--set", "dataset.kind=manifest", "--set", f"dataset.path={manifest}",
                      "--set", "dataset.labels=[ANG, SAD]", "--set", "train.max_steps=2",
                      "--set", "train.eval_every_steps=1", "--set", "train.checkpoint_every_steps=2")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    with open_catalogue(workdir) as con:
        left_out = " ".join(f"{item} {reason}" for item, reason in
                            con.execute("SELECT item, reason FROM skipped").fetchall())
        kept = [r[0] for r in con.execute("SELECT source_path FROM clips").fetchall()]
    for culprit in ("empty.wav", "short.wav", "silent.wav", "missing.wav", "BORED"):
        assert culprit in left_out, culprit
    assert kept and not any(name in path for path in kept for name in ("empty", "short", "silent"))


def test_unknown_config_key_is_rejected(tmp_path: Path) -> None:
    out = serlens("run", "--workdir", str(tmp_path), "--set", "train.learning_rate=1")
    assert out.returncode == 2 and "train.learning_rate" in out.stderr


def test_run_killed_midway_then_rerun_leaves_a_consistent_store(tmp_path: Path) -> None:
    import signal

    workdir = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "serlens.pipeline.cli", "run", "--workdir", str(workdir), "--quiet", *SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    # Kill the driver and its local Ray (one process group) once fine-tuning has saved step 4.
    while time.monotonic() < deadline and not list(workdir.glob("checkpoints/*/step-000004/config.json")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended on its own: the kill never landed"
    time.sleep(3)  # a process that outlived the kill would go on writing checkpoints meanwhile
    # The kill landed mid-fine-tuning: step 4 holds the latest resume state, step 8 was never written.
    from serlens.trainer.checkpoints import latest_state_folder, load_state

    (train_dir,) = workdir.glob("checkpoints/*")
    assert latest_state_folder(train_dir) == train_dir / "step-000004"
    assert load_state(train_dir / "step-000004")["step"] == 4
    assert not (train_dir / "step-000008").exists()
    killed_run_id = load_state(train_dir / "step-000004")["run_id"]

    again = serlens("run", "--workdir", str(workdir), "--quiet", *SMALL)
    assert again.returncode == 0, again.stderr[-4000:]
    with open_catalogue(workdir) as con:
        for table, key in (("clips", "clip_id"), ("egemaps", "clip_id"),
                           ("embeddings", "clip_id, checkpoint_step, layer"),
                           ("checkpoints", "checkpoint_step"), ("cka", "checkpoint_step, layer, estimator"),
                           ("probes", "features, checkpoint_step, layer, head, task, weights, seed")):
            total, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
            assert total == distinct > 0, table
        steps = [r[0] for r in con.execute("SELECT checkpoint_step FROM checkpoints ORDER BY 1").fetchall()]
        assert steps == [0, 4, 8]
        run_ids = {r[0] for r in con.execute("SELECT run_id FROM checkpoints").fetchall()}
    # The rerun resumed the killed fit (its MLflow run, reopened at step 4) rather than starting over.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.serlens = 'trainer'")
    assert [r.info.run_id for r in runs] == [killed_run_id] and run_ids == {killed_run_id}
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["serlens.resumed_from_step"] == "4"
