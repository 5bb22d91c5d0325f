"""Ray wrappers around the plain services: one remote function or actor per stage.

Each wrapper builds its service inside the worker process (one opensmile instance or one
model per worker), does the work next to the data, and writes its rows to the store itself
when the stage's output is per-item (eGeMAPS, embeddings). Nothing here holds science: that
lives in ``services/<name>/core.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ray

from serlens.shared.audio import read_wav, store_normalized
from serlens.shared.console import progress_bar
from serlens.shared.rows import egemaps_table, embedding_table

T = TypeVar("T")
R = TypeVar("R")


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> int:
    """CPUs the connected Ray cluster has (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def node_id() -> str:
    """The Ray node this code runs on (recorded with the stages that fan out)."""
    return ray.get_runtime_context().get_node_id()


def node_counts(parts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Items per node from ``(node id, items)`` pairs."""
    counts: dict[str, int] = {}
    for node, items in parts:
        counts[node] = counts.get(node, 0) + items
    return counts


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def gather(refs: list[ray.ObjectRef], *, desc: str, total: int | None = None,
           weights: Sequence[int] | None = None, progress: bool = True) -> list[Any]:
    """Wait for Ray futures with a progress bar; results in submission order."""
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    with progress_bar(total=total if total is not None else len(refs), desc=desc,
                      unit="clip" if weights else "task", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                results[i] = ray.get(ref)
                bar.update(weights[i] if weights else 1)
    return results


#: What a pool actor's call raises when its process or node died (the work itself did not fail).
_ACTOR_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def map_on_actors(actors: Sequence[Any], chunks: Sequence[Sequence[Any]],
                  call: Callable[[Any, Sequence[Any]], ray.ObjectRef], *, desc: str,
                  make_actor: Callable[[], Any], progress: bool = True) -> list[Any]:
    """Run ``call(actor, chunk)`` for every chunk over a pool of actors; results in chunk order.

    A chunk whose actor dies (its process crashed or its node left the cluster) runs again on
    a live actor; when none is left, ``make_actor`` starts one where Ray finds room. Losing
    nodes midway loses no work. An error raised by the work itself is not retried.

    Raises:
        Whatever the work raised (a serlens error arrives wrapped in ``RayTaskError``).
    """
    live = list(actors)
    results: list[Any] = [None] * len(chunks)
    refs = {call(live[i % len(live)], chunk): (i, live[i % len(live)]) for i, chunk in enumerate(chunks)}
    with progress_bar(total=sum(len(c) for c in chunks), desc=desc, unit="clip", disable=not progress) as bar:
        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            i, actor = refs.pop(ref)
            try:
                results[i] = ray.get(ref)
            except _ACTOR_LOST:
                if actor in live:
                    live.remove(actor)
                if not live:
                    live.append(make_actor())
                again = live[i % len(live)]
                refs[call(again, chunks[i])] = (i, again)
                continue
            bar.update(len(chunks[i]))
    return results


@ray.remote
def _map_chunk(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(item) for item in items]


def ray_map(fn: Callable[[T], R], items: Iterable[T], *, desc: str = "map", chunk_size: int = 32,
            progress: bool = True) -> list[R]:
    """``map`` over Ray tasks, in chunks, order kept (``fn`` must be a module-level function)."""
    seq = list(items)
    chunks = chunked(seq, chunk_size)
    refs: list[ray.ObjectRef] = [_map_chunk.remote(fn, chunk) for chunk in chunks]  # type: ignore[arg-type]
    out = gather(refs, desc=desc, total=len(seq), weights=[len(c) for c in chunks], progress=progress)
    return [r for part in out for r in part]


@ray.remote
def normalize_chunk(items: Sequence[dict[str, Any]], config: Any, audio_dir: str) -> list[dict[str, Any]]:
    """Normalise each source file; write the 16 kHz float32 WAV under ``audio_dir``.

    Returns one dict per item: the loudness record, sample count and output path, or
    ``{"problem": reason}``; each with the node that did it.
    """
    from serlens.normalize.service import NormalizeService
    from serlens.shared.errors import ServiceError

    service = NormalizeService(config=config)
    node = node_id()
    out: list[dict[str, Any]] = []
    for item in items:
        try:
            signal, record, decoded = service.process_file(item["source_path"], segment=item.get("segment"))
        except ServiceError as err:
            out.append({"clip_id": item["clip_id"], "problem": str(err), "node": node})
            continue
        path, digest = store_normalized(audio_dir, item["audio_sha256"], signal)
        out.append({"clip_id": item["clip_id"], "loudness": record, "num_samples": len(signal),
                    "normalized_path": str(path), "normalized_sha256": digest, "node": node})
    return out


@ray.remote(num_cpus=1)
class EgemapsWorker:
    """One opensmile extractor per worker process; writes its rows to the store."""

    def __init__(self, config: Any, store_root: str) -> None:
        from serlens.egemaps.service import EgemapsService
        from serlens.shared.store import FeatureStore

        self.service = EgemapsService(config=config)
        self.store = FeatureStore(store_root)

    def extractor_version(self) -> str:
        """The extractor's version string (lineage)."""
        return self.service.extractor_version

    def process(self, items: Sequence[dict[str, Any]], config_hash: str) -> tuple[str, int]:
        """Extract the 88 functionals of each clip and append them to ``egemaps``; ``(node, clips)``."""
        signals = [read_wav(item["normalized_path"])[0] for item in items]
        features = self.service.process_batch(signals, 16_000)
        self.store.write("egemaps", egemaps_table(items, features, feature_names=self.service.feature_names,
                                                  extractor_version=self.service.extractor_version),
                         config_hash=config_hash, stage="egemaps")
        return node_id(), len(items)


@ray.remote
class EmbedWorker:
    """One encoder checkpoint per actor; writes pooled hidden states to ``embeddings``."""

    def __init__(self, config: Any, model_path: str, store_root: str, num_threads: int | None = None) -> None:
        import torch

        from serlens.embed.service import EmbedService
        from serlens.shared.store import FeatureStore

        if num_threads:
            torch.set_num_threads(num_threads)
        self.service = EmbedService(config=config, model=model_path)
        self.store = FeatureStore(store_root)

    def num_hidden_states(self) -> int:
        """Hidden states per clip of this encoder."""
        return self.service.bundle.num_hidden_states

    def process(self, items: Sequence[dict[str, Any]], *, model: str, train_key: str, step: int,
                config_hash: str) -> tuple[str, int]:
        """Embed each clip at every kept hidden state and append the rows; ``(node, clips)``."""
        signals = [read_wav(item["normalized_path"])[0] for item in items]
        pooled = self.service.process_batch(signals, 16_000)  # (n, layers, dim)
        self.store.write("embeddings", embedding_table(items, pooled, layers=self.service.layers, model=model,
                                                       train_key=train_key, step=step),
                         config_hash=config_hash, stage="embed")
        return node_id(), len(items)


@ray.remote
def hardware_task() -> dict[str, Any]:
    """The hardware of the node this task lands on (run with ``num_gpus=1`` to describe a GPU node)."""
    from serlens.shared.provenance import hardware

    return {"node": node_id(), **hardware()}


@ray.remote
def train_task(config: Any, tracking: Any, model: str, train: Sequence[Any], validation: Sequence[Any],
               labels: Sequence[str], output_dir: str, train_key: str, num_threads: int | None = None,
               progress: bool = True, run_name: str | None = None) -> Any:
    """Fine-tune on a Ray worker (a GPU one when the cluster has GPUs)."""
    import torch

    from serlens.trainer.service import TrainerService

    if num_threads:
        torch.set_num_threads(num_threads)
    trainer = TrainerService(config=config, tracking=tracking)
    return trainer.fit(model=model, train=train, validation=validation, labels=labels,
                       output_dir=Path(output_dir), train_key=train_key, resume=True, progress=progress,
                       run_name=run_name)


def load_cells(store_root: str, train_key: str, steps: Sequence[int], clip_ids: Sequence[str],
               config_hash: str) -> dict[tuple[int, int], np.ndarray]:
    """Embedding matrices (clips x dim) per (checkpoint, layer), rows in ``clip_ids`` order."""
    from serlens.shared.store import FeatureStore

    store = FeatureStore(store_root)
    order = {c: i for i, c in enumerate(clip_ids)}
    cells: dict[tuple[int, int], np.ndarray] = {}
    for step in steps:
        tbl = store.read("embeddings", columns=["clip_id", "layer", "embedding"],
                         filters={"config_hash": config_hash},
                         partition={"train_key": train_key, "checkpoint_step": step})
        ids = tbl.column("clip_id").to_pylist()
        layers = np.asarray(tbl.column("layer").to_numpy(), dtype=np.int64)
        values = tbl.column("embedding").combine_chunks()
        dim = len(values[0]) if len(values) else 0
        matrix = values.flatten().to_numpy().reshape(len(ids), dim)
        for layer in np.unique(layers):
            rows = np.flatnonzero(layers == layer)
            cell = np.full((len(clip_ids), dim), np.nan, dtype=np.float32)
            for r in rows:
                if ids[r] in order:
                    cell[order[ids[r]]] = matrix[r]
            if np.isnan(cell).any():
                missing = [clip_ids[i] for i in np.flatnonzero(np.isnan(cell).any(axis=1))[:5]]
                raise RuntimeError(f"embeddings missing for checkpoint {step}, layer {layer}: {missing}...")
            cells[(int(step), int(layer))] = cell
    return cells


def cka_inputs(clips: Sequence[dict[str, Any]], clip_ids: Sequence[str], checkpoints: Sequence[dict[str, Any]],
               embed_config: Any) -> tuple[dict[str, list[str]], dict[str, Any] | None]:
    """What the CKA stage needs beyond the cells: confound labels per clip, the re-embedding job.

    Returns:
        ``{factor: label per clip in clip_ids order}`` for speaker, gender and sentence (a
        factor some clip lacks is left out), and the noise-floor job: checkpoint 0's model
        re-run on the same clips in batches of another size (None without a local model).
    """
    by_id = {c["clip_id"]: c for c in clips}
    found = {name: [by_id[c].get(name) for c in clip_ids] for name in ("speaker", "gender", "sentence")}
    factors = {name: [str(v) for v in values] for name, values in found.items() if None not in values}
    first = min(checkpoints, key=lambda c: int(c["checkpoint_step"]), default=None)
    if first is None or not first.get("local_path"):
        return factors, None
    # Another batch composition than the run's: half its cap, or batches of three under a frame budget.
    batch_size = max(1, embed_config.batch_size // 2) if embed_config.batch_size else 3
    return factors, {"model_path": first["local_path"], "config": replace(embed_config, batch_size=batch_size),
                     "paths": [by_id[c]["normalized_path"] for c in clip_ids]}


def reembed_cells(model_path: str, config: Any, paths: Sequence[str]) -> dict[int, np.ndarray]:
    """Checkpoint 0's pooled hidden states again, batched differently (layer -> clips x dim)."""
    from serlens.embed.service import EmbedService

    service = EmbedService(config=config, model=model_path)
    pooled = service.process_batch([read_wav(p)[0] for p in paths], 16_000)
    return {int(layer): pooled[:, j] for j, layer in enumerate(service.layers)}


@ray.remote
def cka_analysis_task(config: Any, store_root: str, train_key: str, steps: Sequence[int], clip_ids: Sequence[str],
                      embed_hash: str, reference: np.ndarray, factors: dict[str, list[str]],
                      reembed: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Every CKA table (cells vs eGeMAPS with p, q, CIs, partial; changes; drift; layer x layer)."""
    from serlens.cka.service import CkaService

    cells = load_cells(store_root, train_key, steps, clip_ids, embed_hash)
    tables = CkaService(config=config).analyse(
        cells, reference, reference_name="egemaps", speakers=factors.get("speaker"), confounds=factors,
        reembedded=reembed_cells(**reembed) if reembed else None)
    return tables.by_table()


def egemaps_matrix(store: Any, clip_ids: Sequence[str], egemaps_key: str) -> np.ndarray:
    """EGeMAPS (clips x 88) in ``clip_ids`` order, from the rows stored under ``egemaps_key``.

    Raises:
        StoreError: a clip has no eGeMAPS row.
    """
    from serlens.shared.errors import StoreError
    from serlens.shared.schema import egemaps_feature_names

    names = list(egemaps_feature_names())
    tbl = store.read("egemaps", columns=["clip_id", *names], filters={"config_hash": egemaps_key})
    index = {c: i for i, c in enumerate(tbl.column("clip_id").to_pylist())}
    missing = [c for c in clip_ids if c not in index]
    if missing:
        raise StoreError(f"eGeMAPS missing for {len(missing)} clip(s), e.g. {missing[:3]}")
    matrix = np.column_stack([tbl.column(n).to_numpy(zero_copy_only=False) for n in names]).astype(np.float64)
    return matrix[[index[c] for c in clip_ids]]


def write_tables(store: Any, tables: dict[str, list[dict[str, Any]]], *, train_key: str, config_hash: str,
                 stage: str | None = None) -> int:
    """Write each table's rows (with ``train_key``) under one config hash, pending until ``stage`` is marked."""
    count = 0
    for name, rows in tables.items():
        if not rows:
            continue
        for r in rows:
            r["train_key"] = train_key
        store.write(name, rows, config_hash=config_hash, stage=stage)
        count += len(rows)
    return count


@ray.remote
def probe_task(config: Any, store_root: str, train_key: str, steps: Sequence[int], clip_ids: Sequence[str],
               embed_hash: str, egemaps: np.ndarray, labels: Sequence[str], speakers: Sequence[str],
               classifier_folder: str | None = None, num_threads: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every probe of the run: rows per probe table (see ``serlens.probe.service``)."""
    import torch

    from serlens.probe.service import ProbeService
    from serlens.shared.schema import egemaps_feature_names

    if num_threads:
        torch.set_num_threads(num_threads)
    loaded = load_cells(store_root, train_key, steps, clip_ids, embed_hash)
    cells: dict[tuple[str, int | None, int | None], np.ndarray] = {
        ("embeddings", step, layer): x for (step, layer), x in loaded.items()
    }
    cells[("egemaps", None, None)] = egemaps
    service = ProbeService(config=config)
    from serlens.shared.models import HEAD_FILENAME

    classifier = None
    if classifier_folder and Path(classifier_folder, HEAD_FILENAME).is_file():
        from serlens.probe.classifier import classifier_predictions
        from serlens.probe.service import class_codes

        last = max(layer for step, layer in loaded if step == max(steps))
        classifier = classifier_predictions(classifier_folder, loaded[(max(steps), last)], class_codes(labels)[1])
    return service.process(cells, labels, speakers=speakers, targets=egemaps,
                           target_names=egemaps_feature_names(), classifier=classifier)


def threads_for_task() -> int:
    """Threads a single heavy task may use on this machine."""
    return max(1, min(cluster_cpus(), os.cpu_count() or 1))
