"""What the API reads from and writes to the feature store: checkpoints, clips, features, lineage.

Rows written for ``store=true`` get deterministic keys (``clip_id`` is the SHA-256 of the
uploaded bytes; ``config_hash`` the hash of the settings that made the row), so identical
uploads, however concurrent, show up once in the store's views (newest row per key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from serlens.api.config import ApiConfig
from serlens.api.promotions import current_promotion
from serlens.shared.audio import DecodedAudio, store_normalized
from serlens.shared.errors import NotFoundError
from serlens.shared.keys import egemaps_key, embed_key, normalize_key
from serlens.shared.rows import clip_row, egemaps_table, embedding_table
from serlens.shared.schema import CHECKPOINTS, CLIPS, EMBEDDINGS, LoudnessRecord, egemaps_spec
from serlens.shared.store import FeatureStore
from serlens.shared.workdir import Workdir

#: The ``dataset`` of every row the API writes.
API_DATASET = "api"

#: ``train_key`` of embeddings from an explicitly configured model (not a store checkpoint).
EXTERNAL_TRAIN_KEY = "external"


@dataclass(frozen=True)
class CheckpointRef:
    """One model the Embed and Predict deployments can load.

    Attributes:
        train_key: the fine-tuning run (``external`` for the configured ``model``).
        checkpoint_step: optimizer step (0 = the pretrained model).
        local_path: the folder to load.
        model: the base model's name (lineage of embeddings).
        run_id: the MLflow run, when known.
    """

    train_key: str
    checkpoint_step: int
    local_path: str
    model: str
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The reference as JSON-able fields."""
        return asdict(self)


class CheckpointIndex:
    """The promoted checkpoint and the ``checkpoints`` table, re-read at most every ``ttl_s`` seconds.

    Args:
        store: the feature store.
        paths: the workdir layout (its checkpoint folder is used when a row's ``local_path`` moved).
        default_model: the API's ``model`` setting (None: the promoted checkpoint).
        ttl_s: how long a read is reused, in seconds.
    """

    def __init__(
        self,
        store: FeatureStore,
        paths: Workdir,
        *,
        default_model: str | None,
        ttl_s: float = 2.0,
    ) -> None:
        self.store = store
        self.paths = paths
        self.default_model = default_model
        self.ttl_s = ttl_s
        self._promotion: dict[str, Any] | None = None
        self._rows: list[dict[str, Any]] = []
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def _refresh(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        with self._lock:
            if time.monotonic() - self._read_at > self.ttl_s:
                self._promotion = current_promotion(self.store)
                self._rows = (
                    self.store.read(
                        CHECKPOINTS.name, filters={"train_key": self._promotion["train_key"]}
                    ).to_pylist()
                    if self._promotion
                    else []
                )
                self._read_at = time.monotonic()
            return self._promotion, list(self._rows)

    def resolve(self, step: int | None) -> CheckpointRef:
        """The model a request means: the configured model, or the promoted run's checkpoint.

        Args:
            step: a checkpoint step of the promoted fine-tuning run; None: the configured
                ``model``, else the promoted checkpoint.

        Raises:
            NotFoundError: nothing promoted, no such step in the promoted run, or its folder is gone.
        """
        if step is None and self.default_model:
            return CheckpointRef(EXTERNAL_TRAIN_KEY, 0, self.default_model, self.default_model)
        promotion, rows = self._refresh()
        if promotion is None:
            raise NotFoundError(
                f"no model is promoted in the feature store at {self.store.root}: promote a "
                "checkpoint with POST /models/promote (train scope) or `python -m "
                "serlens.api.promotions --workdir W promote --train-key K --step N`, "
                "or start the API with a model"
            )
        train_key = promotion["train_key"]
        wanted = promotion["checkpoint_step"] if step is None else step
        matches = [r for r in rows if r["checkpoint_step"] == wanted]
        if not matches:
            raise NotFoundError(
                f"checkpoint {wanted} does not exist in the promoted fine-tuning run {train_key}; "
                f"steps: {sorted(r['checkpoint_step'] for r in rows)}"
            )
        row = matches[0]
        return CheckpointRef(
            train_key,
            int(row["checkpoint_step"]),
            self._folder(row),
            row["model"] or "",
            row["run_id"],
        )

    def _folder(self, row: Mapping[str, Any]) -> str:
        stored = self.paths.resolve(row["local_path"])
        candidates = [stored] if stored else []
        candidates.append(
            self.paths.checkpoint_dir(row["train_key"], int(row["checkpoint_step"]))
        )
        for folder in candidates:
            if folder.is_dir():
                return str(folder)
        raise NotFoundError(
            f"checkpoint {row['checkpoint_step']} of run {row['train_key']}: "
            f"no folder at {', '.join(str(c) for c in candidates)}"
        )


@dataclass(frozen=True)
class Lineage:
    """The ``config_hash`` of each kind of row the API writes (the pipeline's recipe)."""

    norm_key: str
    egemaps_hash: str
    embed_args: Any

    @classmethod
    def from_config(cls, config: ApiConfig) -> Lineage:
        """Hashes of the API's normalisation and eGeMAPS settings."""
        norm_key = normalize_key(config.normalize)
        return cls(
            norm_key=norm_key,
            egemaps_hash=egemaps_key(norm_key, config.egemaps),
            embed_args=config.embed,
        )

    def embed_hash(self, train_key: str) -> str:
        """The hash of embeddings from one fine-tuning run with the API's settings."""
        return embed_key(train_key, self.embed_args, API_DATASET)


@dataclass(frozen=True)
class Upload:
    """One decoded, normalised upload and its identity.

    Attributes:
        name: the uploaded file's name.
        audio_sha256: SHA-256 of the uploaded bytes (also the ``clip_id``).
        decoded: the decoded 16 kHz signal and what the source was.
        normalized: the loudness-normalised signal (16 kHz float32).
        loudness: what the normalisation did.
    """

    name: str
    audio_sha256: str
    decoded: DecodedAudio
    normalized: np.ndarray
    loudness: LoudnessRecord

    @property
    def clip_id(self) -> str:
        """The clip's key in the store: the content hash."""
        return self.audio_sha256


class StoreWriter:
    """Writes uploads and what was computed from them to the feature store.

    Args:
        store: the feature store.
        config: the API's settings (audio folder, normalisation target).
        lineage: the config hashes of the rows.
    """

    def __init__(self, store: FeatureStore, config: ApiConfig, lineage: Lineage) -> None:
        self.store = store
        self.config = config
        self.lineage = lineage
        self._audio_lock = threading.Lock()

    def write_clip(self, upload: Upload) -> dict[str, Any]:
        """The normalised WAV (content-addressed, as the pipeline does) and the ``clips`` row."""
        # Identical uploads in flight at once: one writes the file, the others find it.
        with self._audio_lock:
            path, digest = store_normalized(
                self.config.paths.normalized_audio(self.lineage.norm_key), upload.audio_sha256, upload.normalized
            )
        row = clip_row(
            clip_id=upload.clip_id, dataset=API_DATASET, source_path=f"upload:{upload.name}",
            audio_sha256=upload.audio_sha256, num_samples=len(upload.normalized),
            source_sampling_rate=upload.decoded.source_sampling_rate,
            source_num_channels=upload.decoded.source_num_channels, loudness=upload.loudness,
            target_lufs=self.config.normalize.target_lufs, normalized_path=self.config.paths.relative(path),
            normalized_sha256=digest,
        )
        self.store.write(CLIPS.name, [row], config_hash=self.lineage.norm_key)
        return {
            "table": CLIPS.name,
            "dataset": API_DATASET,
            "clip_id": upload.clip_id,
            "config_hash": self.lineage.norm_key,
        }

    def write_egemaps(
        self, upload: Upload, features: Mapping[str, float], extractor_version: str
    ) -> dict[str, Any]:
        """One ``egemaps`` row: the 88 functionals verbatim, with the extractor's version."""
        names = list(features)
        values = np.asarray([[features[name] for name in names]], dtype=np.float32)
        item = {"clip_id": upload.clip_id, "dataset": API_DATASET, "audio_sha256": upload.audio_sha256}
        self.store.write(egemaps_spec().name,
                         egemaps_table([item], values, feature_names=names, extractor_version=extractor_version),
                         config_hash=self.lineage.egemaps_hash)
        return {"table": egemaps_spec().name, "config_hash": self.lineage.egemaps_hash}

    def write_embeddings(
        self, upload: Upload, checkpoint: CheckpointRef, layers: Sequence[int], vectors: np.ndarray
    ) -> dict[str, Any]:
        """One ``embeddings`` row per layer (mean pooling), keyed by model, run, step and layer."""
        embed_hash = self.lineage.embed_hash(checkpoint.train_key)
        item = {"clip_id": upload.clip_id, "dataset": API_DATASET, "audio_sha256": upload.audio_sha256}
        rows = embedding_table([item], np.asarray(vectors, dtype=np.float32)[None], layers=layers,
                               model=checkpoint.model, train_key=checkpoint.train_key,
                               step=checkpoint.checkpoint_step)
        self.store.write(EMBEDDINGS.name, rows, config_hash=embed_hash)
        return {"table": EMBEDDINGS.name, "config_hash": embed_hash, "rows": rows.num_rows}

