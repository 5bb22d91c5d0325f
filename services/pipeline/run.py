"""`serlens run`: the whole study, stage after stage, every stage on Ray.

Reads like the paper's method section: prepare the data (scan, validate, split, normalise),
extract eGeMAPS, fine-tune with checkpoints, embed every checkpoint and layer, compare by
CKA, probe layer by layer, draw, report. Each stage has a key (a hash of its config and its
inputs); what the store already holds under that key is reused, so a second run with the
same config only draws and reports again.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from serlens import __version__
from serlens.pipeline import evaluation, stages
from serlens.pipeline.cluster import run_provenance, start_ray
from serlens.pipeline.config import DEMO_MODEL, StudyArgs
from serlens.pipeline.keys import StageKeys
from serlens.pipeline.preflight import check_study
from serlens.shared import model_uris
from serlens.shared.datasets import DatasetScan, scan_crema_d, scan_manifest
from serlens.shared.errors import InvalidManifestError
from serlens.shared.rows import clip_row
from serlens.shared.runs import record_run
from serlens.shared.workdir import Workdir


@dataclass
class StudyResult:
    """What a run produced, and the keys that identify it in the store."""

    run_id: str
    workdir: Workdir
    data_key: str
    train_key: str = ""
    analysis_key: str = ""
    embed_hash: str = ""
    steps: list[int] = field(default_factory=list)
    num_hidden_states: int = 0
    mlflow_run_id: str | None = None
    tracking_uri: str = ""
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


class Study:
    """One run of the study over a workdir.

    Args:
        args: the validated config.
        workdir: the run's folder.
        skip_invalid: leave invalid inputs out (recorded in ``skipped``) instead of stopping.
        progress: show progress bars.
        analyses: the run goes on to CKA and probes (``serlens train`` stops after fine-tuning),
            so what they need is checked up front too.
    """

    def __init__(self, args: StudyArgs, *, workdir: Path, skip_invalid: bool = False, progress: bool = True,
                 analyses: bool = True) -> None:
        self.args = args.pin_model(Path(workdir).resolve())  # a bad models:/ URI stops here, before any work
        self.dir = Workdir(Path(workdir).resolve())
        self.store = self.dir.store
        self.skip_invalid = skip_invalid
        self.analyses = analyses
        self.progress = progress
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        self.result = StudyResult(run_id=self.run_id, workdir=self.dir, data_key="")

    def _log(self, message: str) -> None:
        if self.progress:
            print(f"[serlens] {message}", flush=True)

    def _timed(self, stage: str, started: float) -> None:
        self.result.stage_seconds[stage] = round(time.perf_counter() - started, 2)

    # ------------------------------------------------------------------ 1. data

    def dataset_name(self) -> str:
        """The dataset's name in the store."""
        return self.args.dataset.name or self.args.dataset.kind

    def scan(self) -> DatasetScan:
        """Find the clips and check every file (in parallel on Ray); may write the demo corpus."""
        ds = self.args.dataset
        name = self.dataset_name()

        def ray_backed_map(fn: Any, items: Any) -> list[Any]:
            return stages.ray_map(fn, items, desc="checking audio", progress=self.progress)

        if ds.kind == "demo":
            from serlens.shared.demo_corpus import ensure_demo_corpus

            folder = Path(ds.path) if ds.path else self.dir.demo_corpus
            if ensure_demo_corpus(folder, num_speakers=ds.demo_speakers,
                                  sentences_per_emotion=ds.demo_sentences_per_emotion, seed=ds.demo_seed):
                self._log(f"wrote the demo corpus to {folder}")
            return scan_crema_d(folder, dataset=name, labels=ds.labels, map_fn=ray_backed_map)
        if not ds.path:
            raise InvalidManifestError([("dataset.path", f"required for dataset.kind={ds.kind!r}")], source="config")
        if ds.kind == "crema-d":
            return scan_crema_d(Path(ds.path), dataset=name, labels=ds.labels, map_fn=ray_backed_map)
        return scan_manifest(Path(ds.path), dataset=name, labels=ds.labels, map_fn=ray_backed_map)

    def keys(self, scan: DatasetScan) -> StageKeys:
        """Every stage key of this run, from the config and the scanned clips."""
        keys = StageKeys.for_study(self.args, scan.clips)
        self.result.data_key, self.result.train_key, self.result.embed_hash = keys.data, keys.train, keys.embed
        return keys

    def check(self, scan: DatasetScan) -> dict[str, int]:
        """Every problem a later stage would hit, raised now in one message; returns the split."""
        if scan.problems and not self.skip_invalid:
            scan.raise_for_problems()
        return check_study(self.args, scan.clips, analyses=self.analyses)

    def prepare(self, scan: DatasetScan, keys: StageKeys, subsets: dict[str, int]) -> list[dict[str, Any]]:
        """Normalise the checked clips; returns the clip rows with their subsets (reused when stored)."""
        started = time.perf_counter()
        problems = list(scan.problems)
        clips = list(scan.clips)
        if self.store.stage_done("prepare", keys.data):
            self.result.reused.append("prepare")
            rows = self.store.read("clips", filters={"config_hash": keys.data}).to_pylist()
            self._timed("prepare", started)
            return self.dir.resolved(rows, "normalized_path")

        items = [{"clip_id": c.clip_id, "source_path": c.source_path, "audio_sha256": c.audio_sha256,
                  "segment": None if c.start_s is None and c.end_s is None else (c.start_s, c.end_s)} for c in clips]
        chunks = stages.chunked(items, 32)
        config = self.args.normalize.to_config()
        audio_dir = str(self.dir.normalized_audio(keys.norm))
        refs = [stages.normalize_chunk.remote(chunk, config, audio_dir) for chunk in chunks]
        results = {r["clip_id"]: r for part in stages.gather(refs, desc="normalising", total=len(items),
                                                              weights=[len(c) for c in chunks],
                                                              progress=self.progress) for r in part}
        late = [(c.source_path, results[c.clip_id]["problem"]) for c in clips if "problem" in results[c.clip_id]]
        if late and not self.skip_invalid:
            raise InvalidManifestError(late, source=f"dataset {self.dataset_name()!r} (normalisation)")
        problems += late
        bad = {p for p, _ in late}
        if bad:  # what remains after skipping must still carry every later stage
            check_study(self.args, [c for c in clips if c.source_path not in bad], subsets, analyses=self.analyses)
        rows = []
        for c in clips:
            if c.source_path in bad:
                continue
            r = results[c.clip_id]
            rows.append(clip_row(
                clip_id=c.clip_id, dataset=c.dataset, source_path=c.source_path, audio_sha256=c.audio_sha256,
                num_samples=r["num_samples"], source_sampling_rate=c.sampling_rate,
                source_num_channels=c.num_channels, loudness=r["loudness"],
                target_lufs=self.args.normalize.target_lufs, normalized_path=self.dir.relative(r["normalized_path"]),
                normalized_sha256=r["normalized_sha256"],
                labels={"speaker": c.speaker, "gender": c.gender, "label": c.label, "sentence": c.sentence,
                        "subset": subsets[c.clip_id], "start_s": c.start_s, "end_s": c.end_s, "split": c.split},
            ))
        if problems:
            self.store.write("skipped", [{"item": item, "stage": "prepare", "reason": reason}
                                         for item, reason in problems], config_hash=keys.data, stage="prepare")
            self.result.warnings.append(f"{len(problems)} input(s) left out (--skip-invalid); see the `skipped` table")
        self.store.write("clips", rows, config_hash=keys.data, stage="prepare")
        self.store.mark_stage("prepare", keys.data, rows=len(rows), seconds=time.perf_counter() - started,
                              nodes=stages.node_counts((r["node"], 1) for r in results.values()))
        self._timed("prepare", started)
        return self.dir.resolved(rows, "normalized_path")

    # ------------------------------------------------------------------ 2. eGeMAPS

    def egemaps(self, clips: Sequence[dict[str, Any]], keys: StageKeys) -> None:
        """88 eGeMAPS functionals per analysed clip, on Ray workers (one extractor each)."""
        started = time.perf_counter()
        done = self.store.keys_present("egemaps", ["dataset", "clip_id", "audio_sha256"],
                                       filters={"config_hash": keys.egemaps})
        todo = [c for c in clips if (c["dataset"], c["clip_id"], c["audio_sha256"]) not in done]
        if not todo and self.store.pending_rows("egemaps", keys.egemaps):  # written before a crash, never marked
            self.store.mark_stage("egemaps", keys.egemaps, rows=0, seconds=time.perf_counter() - started)
        if not todo:
            self.result.reused.append("egemaps")
            self._timed("egemaps", started)
            return
        workers_wanted = self.args.egemaps.num_workers or stages.cluster_cpus()

        def make_worker() -> Any:
            return stages.EgemapsWorker.remote(self.args.egemaps.to_config(), str(self.store.root))

        workers = [make_worker() for _ in range(max(1, min(workers_wanted, len(todo))))]
        done_by = stages.map_on_actors(workers, stages.chunked(todo, 16),
                                       lambda worker, chunk: worker.process.remote(chunk, keys.egemaps),
                                       desc="eGeMAPS", make_actor=make_worker, progress=self.progress)
        for w in workers:
            ray.kill(w)
        self.store.mark_stage("egemaps", keys.egemaps, rows=len(todo), seconds=time.perf_counter() - started,
                              nodes=stages.node_counts(done_by))
        self._timed("egemaps", started)

    # ------------------------------------------------------------------ 3. fine-tuning

    def model_path(self) -> str:
        """The encoder to fine-tune; the demo's tiny random WavLM is written on first use."""
        name = self.args.model.name
        if name != DEMO_MODEL:  # a hub id, a folder, or a models:/ URI downloaded once per version
            return model_uris.local_source(name, self.args.tracking.to_config(self.dir.root), self.dir.models)
        from serlens.shared.models import create_random_encoder

        folder = self.dir.models / "tiny-random-wavlm"
        if not (folder / "config.json").exists():
            create_random_encoder(folder, seed=0)
        return str(folder)

    def train(self, clips: Sequence[dict[str, Any]], keys: StageKeys) -> list[dict[str, Any]]:
        """Fine-tune on subset 1, validate on subset 2; returns the checkpoint rows."""
        from serlens.trainer.service import TrainClip

        started = time.perf_counter()
        tracking = self.args.tracking.to_config(self.dir.root)
        self.result.tracking_uri = tracking.tracking_uri
        if self.store.stage_done("train", keys.train):
            self.result.reused.append("train")
            rows = self.store.read("checkpoints", filters={"train_key": keys.train},
                                   order_by=["checkpoint_step"]).to_pylist()
            self.result.mlflow_run_id = rows[0]["run_id"] if rows else None
            self._timed("train", started)
            return self.dir.resolved(rows, "local_path")

        def as_clip(c: dict[str, Any]) -> TrainClip:
            return TrainClip(clip_id=c["clip_id"], path=c["normalized_path"], label=c["label"])

        train = [as_clip(c) for c in clips if c["subset"] == 1]
        validation = [as_clip(c) for c in clips if c["subset"] == 2]
        gpus = stages.cluster_gpus()
        threads = stages.threads_for_task()
        # One CPU reserved in Ray's books; torch is told how many threads to use. Asking Ray for
        # every core would wait forever beside a running Serve app that holds some of them.
        task = stages.train_task.options(num_gpus=1 if gpus >= 1 else 0, num_cpus=1)
        self._log(f"fine-tuning {self.args.model.name} on {len(train)} clips "
                  f"(validation {len(validation)}), {'GPU' if gpus else 'CPU'}")
        result = ray.get(task.remote(self.args.train.to_config(), tracking, self.model_path(), train, validation,
                                     self.args.dataset.labels, str(self.dir.train_dir(keys.train)), keys.train,
                                     None if gpus else threads, self.progress, evaluation.run_name(self, keys.train)))
        self.result.mlflow_run_id = result.run_id
        rows = [{
            "train_key": keys.train, "checkpoint_step": ck.step, "run_id": result.run_id, "uri": ck.uri,
            "local_path": self.dir.relative(ck.local_path), "model": self.args.model.name, "epoch": ck.epoch,
            "train_loss": ck.train_loss, "val_loss": ck.val_loss, "val_f1_macro": ck.val_f1_macro,
        } for ck in result.checkpoints]
        metrics = [{"train_key": keys.train, "run_id": result.run_id, "step": m["step"],
                    "epoch": m.get("epoch"), "name": m["name"], "value": m["value"]} for m in result.metrics]
        self.store.write("train_metrics", metrics, config_hash=keys.train, stage="train")
        self.store.write("checkpoints", rows, config_hash=keys.train, stage="train")
        self.store.mark_stage("train", keys.train, rows=len(rows), seconds=time.perf_counter() - started)
        self._timed("train", started)
        return self.dir.resolved(rows, "local_path")

    # ------------------------------------------------------------------ 4. embeddings

    def embed(self, clips: Sequence[dict[str, Any]], checkpoints: Sequence[dict[str, Any]], keys: StageKeys) -> None:
        """Pooled hidden states of every analysed clip at every checkpoint and layer."""
        started = time.perf_counter()
        gpus = stages.cluster_gpus()
        threads = stages.threads_for_task()
        reused = True
        done_by: list[tuple[str, int]] = []
        for ck in checkpoints:
            step = int(ck["checkpoint_step"])
            done = self.store.keys_present("embeddings", ["clip_id"], filters={"config_hash": keys.embed},
                                           partition={"train_key": keys.train, "checkpoint_step": step})
            todo = [c for c in clips if (c["clip_id"],) not in done]
            if not todo:
                continue
            reused = False

            def make_worker(folder: str = ck["local_path"]) -> Any:
                return stages.EmbedWorker.options(num_gpus=1 if gpus >= 1 else 0, num_cpus=1).remote(
                    self.args.embed.to_config(), folder, str(self.store.root), None if gpus else threads)

            worker = make_worker()
            done_by += stages.map_on_actors(
                [worker], stages.chunked(todo, 32),
                lambda actor, chunk, step=step: actor.process.remote(
                    chunk, model=self.args.model.name, train_key=keys.train, step=step, config_hash=keys.embed),
                desc=f"embedding step {step}", make_actor=make_worker, progress=self.progress)
            ray.kill(worker)
        if done_by or self.store.pending_rows("embed", keys.embed):  # or written before a crash, never marked
            self.store.mark_stage("embed", keys.embed, rows=sum(n for _, n in done_by),
                                  seconds=time.perf_counter() - started, nodes=stages.node_counts(done_by))
        if reused:
            self.result.reused.append("embed")
        self._timed("embed", started)

    # ------------------------------------------------------------------ 5-6. analyses

    def analyse(self, clips: Sequence[dict[str, Any]], checkpoints: Sequence[dict[str, Any]], keys: StageKeys) -> None:
        """CKA against eGeMAPS and the layer-wise probes, as two Ray tasks."""
        started = time.perf_counter()
        clip_ids = sorted(c["clip_id"] for c in clips)
        labels = {c["clip_id"]: c["label"] for c in clips}
        steps = sorted(int(c["checkpoint_step"]) for c in checkpoints)
        self.result.steps = steps
        analysis_key = keys.analysis(self.args, clip_ids)
        self.result.analysis_key = analysis_key
        reference = stages.egemaps_matrix(self.store, clip_ids, keys.egemaps)
        threads = stages.threads_for_task()
        gpus = stages.cluster_gpus()
        pending: dict[str, ray.ObjectRef] = {}
        if not self.store.stage_done("cka", analysis_key):
            factors, reembed = stages.cka_inputs(clips, clip_ids, checkpoints, self.args.embed.to_config())
            pending["cka"] = stages.cka_analysis_task.options(num_cpus=1).remote(
                self.args.cka.to_config(), str(self.store.root), keys.train, steps, clip_ids,
                keys.embed, reference, factors, reembed)
        else:
            self.result.reused.append("cka")
        if not self.store.stage_done("probes", analysis_key):
            speakers = {c["clip_id"]: c["speaker"] for c in clips}
            final = max(checkpoints, key=lambda c: int(c["checkpoint_step"]))
            pending["probes"] = stages.probe_task.options(num_cpus=1, num_gpus=1 if gpus >= 1 else 0).remote(
                self.args.probe.to_config(), str(self.store.root), keys.train, steps, clip_ids,
                keys.embed, reference, [labels[c] for c in clip_ids], [speakers[c] for c in clip_ids],
                final.get("local_path"), None if gpus else threads)
        else:
            self.result.reused.append("probes")
        if pending:
            self._log(f"analysing {len(steps)} checkpoint(s) x layers on {len(clip_ids)} clips: {', '.join(pending)}")
        for stage, ref in pending.items():
            result = ray.get(ref)
            # The CKA stage fills four tables, the probe stage four: {table: rows}.
            tables = result if isinstance(result, dict) else {stage: result}
            count = stages.write_tables(self.store, tables, train_key=keys.train, config_hash=analysis_key,
                                        stage=stage)
            self.store.mark_stage(stage, analysis_key, rows=count, seconds=time.perf_counter() - started)
        self._timed("analyse", started)

    # ------------------------------------------------------------------ the run

    def run(self) -> StudyResult:
        """Every stage in order; then figures and the report."""
        from serlens.pipeline.report import write_report

        t0 = time.perf_counter()
        self.store.init()
        self.store.refresh_views()
        scan = self.scan()
        subsets = self.check(scan)
        keys = self.keys(scan)
        clips = self.prepare(scan, keys, subsets)
        run_dir = self.dir.run_dir(self.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(self.args.to_yaml())
        provenance = run_provenance(self.model_path(), self.args.model.revision)
        row = {"config_yaml": self.args.to_yaml(), "serlens_version": __version__,
               "provenance_json": json.dumps(provenance), "data_key": keys.data, "train_key": keys.train,
               "embed_hash": keys.embed, "egemaps_key": keys.egemaps}
        record_run(self.store, self.run_id, "running", config_hash=keys.data, **row)
        try:
            self._stages(clips, keys)
        except BaseException as err:
            error = json.dumps({"error": f"{type(err).__name__}: {err}"})
            record_run(self.store, self.run_id, "failed", config_hash=keys.data, **row,
                       seconds=time.perf_counter() - t0, summary_json=error)
            raise
        record_run(self.store, self.run_id, "finished", config_hash=keys.data, **row,
                   seconds=time.perf_counter() - t0, analysis_key=self.result.analysis_key,
                   mlflow_run_id=self.result.mlflow_run_id, tracking_uri=self.result.tracking_uri,
                   summary_json=json.dumps({"warnings": self.result.warnings, "reused": self.result.reused,
                                            "stage_seconds": self.result.stage_seconds, "steps": self.result.steps}))
        self.store.refresh_views()
        started = time.perf_counter()
        write_report(self.dir.root)
        self._timed("report", started)
        self.result.figures = sorted(self.dir.figures.glob("*.png"))
        evaluation.log_study_evaluation(self, keys.train)  # the analyses in MLflow, linked to the checkpoints' models
        return self.result

    def _stages(self, clips: list[dict[str, Any]], keys: StageKeys) -> None:
        """eGeMAPS, fine-tuning, embedding and the analyses, in order."""
        analysed = [c for c in clips if c["subset"] == self.args.analysis.subset]
        self._log(f"{len(clips)} clips: subset sizes "
                  + ", ".join(f"{s}: {sum(c['subset'] == s for c in clips)}" for s in (1, 2, 3)))
        self.egemaps(analysed, keys)
        checkpoints = self.train(clips, keys)
        self.embed(analysed, checkpoints, keys)
        self.analyse(analysed, checkpoints, keys)


def run_study(args: StudyArgs, *, workdir: Path, address: str | None = None, skip_invalid: bool = False,
              progress: bool = True) -> StudyResult:
    """Start (or join) Ray and run every stage of the study."""
    start_ray(address)
    return Study(args, workdir=workdir, skip_invalid=skip_invalid, progress=progress).run()

