"""Ray wrappers around the plain services: one remote function or actor per stage.

Each wrapper builds its service inside the worker process (one opensmile instance or one
model per worker), does the work next to the data, and writes its rows to the store itself
when the stage's output is per-item (eGeMAPS, embeddings). Nothing here holds science: that
lives in ``services/<name>/core.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import ray
from tqdm.auto import tqdm

from serlens.shared.audio import read_wav, store_normalized

T = TypeVar("T")
R = TypeVar("R")


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> int:
    """CPUs the connected Ray cluster has (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def gather(refs: list[ray.ObjectRef], *, desc: str, total: int | None = None,
           weights: Sequence[int] | None = None, progress: bool = True) -> list[Any]:
    """Wait for Ray futures with a progress bar; results in submission order."""
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    with tqdm(total=total if total is not None else len(refs), desc=desc, unit="clip" if weights else "task",
              disable=not progress, dynamic_ncols=True) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                results[i] = ray.get(ref)
                bar.update(weights[i] if weights else 1)
    return results


@ray.remote
def _map_chunk(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(item) for item in items]


def ray_map(fn: Callable[[T], R], items: Iterable[T], *, desc: str = "map", chunk_size: int = 32,
            progress: bool = True) -> list[R]:
    """``map`` over Ray tasks, in chunks, order kept (``fn`` must be a module-level function)."""
    seq = list(items)
    chunks = chunked(seq, chunk_size)
    refs = [_map_chunk.remote(fn, chunk) for chunk in chunks]
    out = gather(refs, desc=desc, total=len(seq), weights=[len(c) for c in chunks], progress=progress)
    return [r for part in out for r in part]


@ray.remote
def normalize_chunk(items: Sequence[dict[str, Any]], config: Any, audio_dir: str) -> list[dict[str, Any]]:
    """Normalise each source file; write the 16 kHz float32 WAV under ``audio_dir``.

    Returns one dict per item: the loudness record and output path, or ``{"problem": reason}``.
    """
    from serlens.normalize.service import NormalizeService
    from serlens.shared.errors import ServiceError

    service = NormalizeService(config=config)
    out: list[dict[str, Any]] = []
    for item in items:
        try:
            signal, record, decoded = service.process_file(item["source_path"])
        except ServiceError as err:
            out.append({"clip_id": item["clip_id"], "problem": str(err)})
            continue
        path, digest = store_normalized(audio_dir, item["audio_sha256"], signal)
        out.append({"clip_id": item["clip_id"], **record.as_columns(), "normalized_path": str(path),
                    "normalized_sha256": digest, "duration_s": len(signal) / 16_000})
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

    def process(self, items: Sequence[dict[str, Any]], config_hash: str) -> int:
        """Extract the 88 functionals of each clip and append them to ``egemaps``."""
        signals = [read_wav(item["normalized_path"])[0] for item in items]
        features = self.service.process_batch(signals, 16_000)
        columns: dict[str, Any] = {
            "clip_id": [i["clip_id"] for i in items],
            "dataset": [i["dataset"] for i in items],
            "audio_sha256": [i["audio_sha256"] for i in items],
            "extractor_version": [self.service.extractor_version] * len(items),
        }
        for j, name in enumerate(self.service.feature_names):
            columns[name] = pa.array(features[:, j], pa.float32())
        self.store.write("egemaps", pa.table(columns), config_hash=config_hash)
        return len(items)


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
                config_hash: str) -> int:
        """Embed each clip at every hidden state and append the rows."""
        signals = [read_wav(item["normalized_path"])[0] for item in items]
        pooled = self.service.process_batch(signals, 16_000)  # (n, layers, dim)
        n, num_layers, dim = pooled.shape
        flat = pa.array(pooled.reshape(-1).astype(np.float32), pa.float32())
        offsets = pa.array(np.arange(0, n * num_layers * dim + 1, dim, dtype=np.int32))
        self.store.write("embeddings", pa.table({
            "clip_id": [i["clip_id"] for i in items for _ in range(num_layers)],
            "dataset": [i["dataset"] for i in items for _ in range(num_layers)],
            "audio_sha256": [i["audio_sha256"] for i in items for _ in range(num_layers)],
            "model": [model] * (n * num_layers),
            "train_key": [train_key] * (n * num_layers),
            "checkpoint_step": pa.array([step] * (n * num_layers), pa.int32()),
            "layer": pa.array(list(range(num_layers)) * n, pa.int16()),
            "pooling": ["mean"] * (n * num_layers),
            "embedding": pa.ListArray.from_arrays(offsets, flat),
        }), config_hash=config_hash)
        return n


@ray.remote
def train_task(config: Any, tracking: Any, model: str, train: Sequence[Any], validation: Sequence[Any],
               labels: Sequence[str], output_dir: str, train_key: str, num_threads: int | None = None,
               progress: bool = True) -> Any:
    """Fine-tune on a Ray worker (a GPU one when the cluster has GPUs)."""
    import torch

    from serlens.trainer.service import TrainerService

    if num_threads:
        torch.set_num_threads(num_threads)
    trainer = TrainerService(config=config, tracking=tracking)
    return trainer.fit(model=model, train=train, validation=validation, labels=labels,
                       output_dir=Path(output_dir), train_key=train_key, resume=True, progress=progress)


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


@ray.remote
def cka_task(config: Any, store_root: str, train_key: str, steps: Sequence[int], clip_ids: Sequence[str],
             embed_hash: str, reference: np.ndarray) -> list[dict[str, Any]]:
    """CKA of every (checkpoint, layer) against the reference features."""
    from serlens.cka.service import CkaService

    cells = load_cells(store_root, train_key, steps, clip_ids, embed_hash)
    return CkaService(config=config).process(cells, reference, reference_name="egemaps")


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
