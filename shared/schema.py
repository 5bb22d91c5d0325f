"""Table schemas of the feature store: one explicit pyarrow schema per table, its join keys, a version.

Services import these (and the records, re-exported from ``serlens.shared.records``); they never
restate column lists. Every table carries lineage: what produced a row (``config_hash``, an
extractor or model version) and when (``created_at``, UTC).
"""

from __future__ import annotations

from functools import lru_cache

import pyarrow as pa

from serlens.shared.egemaps_names import EGEMAPS_FEATURE_NAMES

# Re-exported: callers import the records from here, beside their tables.
from serlens.shared.records import ClipRecord as ClipRecord
from serlens.shared.records import LoudnessRecord as LoudnessRecord
from serlens.shared.records import SkipRecord as SkipRecord
from serlens.shared.records import TableSpec as TableSpec

SCHEMA_VERSION = 2

#: The six CREMA-D emotion codes, in the order used for class indices everywhere.
EMOTIONS: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")

#: Subsets of the paper's two-phase 80/20 split: 1 = train, 2 = validation, 3 = analysis.
SUBSETS: tuple[int, ...] = (1, 2, 3)

LINEAGE_FIELDS = [
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
]


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema([*fields, *LINEAGE_FIELDS], metadata={"serlens_schema_version": str(SCHEMA_VERSION)})


def egemaps_feature_names() -> tuple[str, ...]:
    """The 88 eGeMAPSv02 functional names, verbatim from openSMILE (kept as data: no extractor is built)."""
    return EGEMAPS_FEATURE_NAMES


CLIPS = TableSpec(
    name="clips",
    schema=_schema(
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("source_path", pa.string()),
        pa.field("audio_sha256", pa.string(), nullable=False),
        pa.field("speaker", pa.string()),
        pa.field("gender", pa.string()),
        pa.field("label", pa.string()),
        pa.field("sentence", pa.string()),
        pa.field("subset", pa.int8()),
        pa.field("duration_s", pa.float64()),
        pa.field("sampling_rate", pa.int32()),
        pa.field("source_sampling_rate", pa.int32()),
        pa.field("source_num_channels", pa.int16()),
        pa.field("lufs_before", pa.float64()), pa.field("lufs_after", pa.float64()),
        pa.field("gain_db", pa.float64()),
        pa.field("peak_dbfs", pa.float64()),
        pa.field("clipped_fraction", pa.float64()),
        pa.field("loudness_policy", pa.string()),
        pa.field("target_lufs", pa.float64()),
        pa.field("normalized_path", pa.string()),
        pa.field("normalized_sha256", pa.string()),
        pa.field("start_s", pa.float64()), pa.field("end_s", pa.float64()), pa.field("split", pa.string()),
    ),
    keys=("dataset", "clip_id", "config_hash"),
    partition_by=("dataset",),
    description="one row per clip or segment (start_s, end_s): metadata, subset, loudness record, normalised audio",
)

CHECKPOINTS = TableSpec(
    name="checkpoints",
    schema=_schema(
        pa.field("train_key", pa.string(), nullable=False),
        pa.field("checkpoint_step", pa.int32(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("local_path", pa.string()),
        pa.field("model", pa.string()),
        pa.field("epoch", pa.float64()),
        pa.field("train_loss", pa.float64()),
        pa.field("val_loss", pa.float64()),
        pa.field("val_f1_macro", pa.float64()),
    ),
    keys=("train_key", "checkpoint_step"),
    description="fine-tuning checkpoints (0 = the pretrained model) and their MLflow run",
)

PROMOTIONS = TableSpec(
    name="promotions",
    schema=_schema(
        pa.field("target", pa.string(), nullable=False),
        pa.field("train_key", pa.string(), nullable=False),
        pa.field("checkpoint_step", pa.int32(), nullable=False),
        pa.field("promoted_by", pa.string(), nullable=False),
        pa.field("note", pa.string()),
    ),
    keys=("target",),
    description="the checkpoint /embed and /predict serve, set only by an explicit promotion",
)

TRAIN_METRICS = TableSpec(
    name="train_metrics",
    schema=_schema(
        pa.field("train_key", pa.string(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("epoch", pa.float64()),
        pa.field("name", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
    ),
    keys=("train_key", "step", "name"),
    description="training curves: train_loss per optimizer step, val_loss and val_f1_macro per validation",
)

CKA = TableSpec(
    name="cka",
    schema=_schema(
        pa.field("train_key", pa.string()),
        pa.field("checkpoint_step", pa.int32(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
        pa.field("estimator", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("n_clips", pa.int32()),
        pa.field("effective_rank", pa.float64()),
        pa.field("effective_rank_reference", pa.float64()),
        pa.field("null_mean", pa.float64()),
        pa.field("null_mean_permuted", pa.float64()),
        pa.field("permutation_scheme", pa.string()),
        pa.field("permutations", pa.int32()),
        pa.field("p_value", pa.float64()),
        pa.field("q_value", pa.float64()),
        pa.field("n_speakers", pa.int32()),
        pa.field("std_error", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("partial_value", pa.float64()),
        pa.field("confounds", pa.string()),
    ),
    keys=("config_hash", "checkpoint_step", "layer", "reference", "estimator"),
    description="CKA of each (checkpoint, layer) with eGeMAPS, linear and debiased, with effective ranks, null"
    " means, permutation p, BH q, speaker-jackknife CI and partial CKA (services/cka/analysis.py says how)",
)

CKA_CHANGES = TableSpec(
    name="cka_changes",
    schema=_schema(
        pa.field("train_key", pa.string()),
        pa.field("checkpoint_step", pa.int32(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("estimator", pa.string(), nullable=False),
        pa.field("baseline", pa.string(), nullable=False),
        pa.field("baseline_step", pa.int32(), nullable=False),
        pa.field("difference", pa.float64()),
        pa.field("std_error", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("p_value", pa.float64()),
        pa.field("q_value", pa.float64()),
        pa.field("n_clips", pa.int32()),
    ),
    keys=("config_hash", "checkpoint_step", "layer", "estimator", "baseline"),
    description="change in CKA with eGeMAPS of checkpoint k against checkpoint 0 (baseline step0) or the previous"
    " checkpoint, per layer: difference, paired speaker-jackknife SE/CI, t-test p (speakers - 1 df), BH q",
)

CKA_DRIFT = TableSpec(
    name="cka_drift",
    schema=_schema(
        pa.field("train_key", pa.string()),
        pa.field("checkpoint_step", pa.int32(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("estimator", pa.string(), nullable=False),
        pa.field("against", pa.string(), nullable=False),
        pa.field("against_step", pa.int32(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("n_clips", pa.int32()),
    ),
    keys=("config_hash", "checkpoint_step", "layer", "estimator", "against"),
    description="CKA of each (checkpoint, layer) embedding with the same layer at checkpoint 0 (against step0) or"
    " the previous checkpoint (previous); against reembed: checkpoint 0 re-embedded in other batches (noise floor)",
)

CKA_LAYERS = TableSpec(
    name="cka_layers",
    schema=_schema(
        pa.field("train_key", pa.string()),
        pa.field("checkpoint_step", pa.int32(), nullable=False),
        pa.field("layer_a", pa.int16(), nullable=False),
        pa.field("layer_b", pa.int16(), nullable=False),
        pa.field("estimator", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("n_clips", pa.int32()),
    ),
    keys=("config_hash", "checkpoint_step", "layer_a", "layer_b", "estimator"),
    description="layer x layer CKA of the embeddings within each checkpoint (every hidden state)",
)

PROBES = TableSpec(
    name="probes",
    schema=_schema(
        pa.field("features", pa.string(), nullable=False),
        pa.field("train_key", pa.string()),
        pa.field("checkpoint_step", pa.int32()),
        pa.field("layer", pa.int16()),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("head", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
        pa.field("f1_macro", pa.float64()),
        pa.field("accuracy", pa.float64()),
        pa.field("epochs", pa.int32()),
        pa.field("val_loss", pa.float64()),
        pa.field("f1_macro_cell", pa.float64()),
        pa.field("f1_low", pa.float64()),
        pa.field("f1_high", pa.float64()),
        pa.field("f1_std_error", pa.float64()),
        pa.field("interval", pa.string()),
        pa.field("seed_std", pa.float64()),
        pa.field("num_classes", pa.int16()),
        pa.field("n_clips", pa.int32()),
    ),
    keys=("config_hash", "features", "checkpoint_step", "layer", "head", "task", "weights", "seed"),
    description="classification probes: macro-F1 per (features, checkpoint, layer, head, task, "
    "weights, seed); the cell's mean over seeds with its speaker-level interval and seed spread",
    extra={
        "protocol": "paper (one stratified 80/10/10 split) or grouped_cv (speaker-grouped K-fold)",
        "head": "linear or mlp (one hidden ReLU layer)",
        "task": "emotion, or control (labels permuted within speakers; selectivity = difference)",
        "weights": "best (best validation loss) or stop (the early-stopping epoch)",
        "f1_low": "speaker-jackknife interval of f1_macro_cell (column interval says which)",
    },
)

PROBE_FEATURES = TableSpec(
    name="probe_features",
    schema=_schema(
        pa.field("train_key", pa.string()),
        pa.field("features", pa.string(), nullable=False),
        pa.field("checkpoint_step", pa.int32()),
        pa.field("layer", pa.int16()),
        pa.field("target", pa.string(), nullable=False),
        pa.field("target_group", pa.string(), nullable=False),
        pa.field("r2", pa.float64()),
        pa.field("r2_control", pa.float64()),
        pa.field("selectivity", pa.float64()),
        pa.field("alpha_median", pa.float64()),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("folds", pa.int16()),
        pa.field("n_clips", pa.int32()),
    ),
    keys=("config_hash", "features", "checkpoint_step", "layer", "target"),
    description="per-eGeMAPS-feature ridge probes: out-of-fold R² (speaker-grouped CV, nested α), "
    "control R² (targets permuted within folds) and selectivity",
)

PROBE_CLASSES = TableSpec(
    name="probe_classes",
    schema=_schema(
        pa.field("train_key", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("features", pa.string(), nullable=False),
        pa.field("checkpoint_step", pa.int32()),
        pa.field("layer", pa.int16()),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("f1", pa.float64()),
        pa.field("support", pa.int32()),
        pa.field("chance_f1", pa.float64()),
    ),
    keys=("config_hash", "source", "label"),
    description="per-class F1 of the best probe cell, the eGeMAPS probe and the fine-tuned "
    "classifier on the analysis clips; chance_f1 is the class's share of the clips",
)

PROBE_CONFUSION = TableSpec(
    name="probe_confusion",
    schema=_schema(
        pa.field("train_key", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("true_label", pa.string(), nullable=False),
        pa.field("predicted_label", pa.string(), nullable=False),
        pa.field("count", pa.int32()),
    ),
    keys=("config_hash", "source", "true_label", "predicted_label"),
    description="confusion counts (over seeds) of the sources in probe_classes",
)

SKIPPED = TableSpec(
    name="skipped",
    schema=_schema(
        pa.field("item", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
    ),
    keys=("config_hash", "stage", "item"),
    description="inputs left out by --skip-invalid, and why",
)

RUNS = TableSpec(
    name="runs",
    schema=_schema(
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("config_yaml", pa.string()),
        pa.field("serlens_version", pa.string()),
        pa.field("seconds", pa.float64()),
        pa.field("data_key", pa.string()),
        pa.field("train_key", pa.string()),
        pa.field("embed_hash", pa.string()),
        pa.field("analysis_key", pa.string()),
        pa.field("mlflow_run_id", pa.string()),
        pa.field("tracking_uri", pa.string()),
        pa.field("summary_json", pa.string()),
        pa.field("egemaps_key", pa.string()),
        # JSON: package versions, git commit, hardware (driver host and GPU node), weights' identity.
        pa.field("provenance_json", pa.string()),
    ),
    keys=("run_id",),
    description="one row per `serlens run`: running, then finished (with every stage key) or failed (with the error)",
)

STAGES = TableSpec(
    name="stages",
    schema=_schema(
        pa.field("stage", pa.string(), nullable=False),
        pa.field("stage_key", pa.string(), nullable=False),
        pa.field("rows", pa.int64()),
        pa.field("seconds", pa.float64()),
        # JSON {Ray node id: items processed there}, for the stages that fan out over the cluster.
        pa.field("nodes_json", pa.string()),
    ),
    keys=("stage", "stage_key"),
    description="completion markers: a stage whose key is here is reused, not recomputed",
)


@lru_cache(maxsize=1)
def egemaps_spec() -> TableSpec:
    """The ``egemaps`` table: one row per normalised clip, the 88 features verbatim."""
    return TableSpec(
        name="egemaps",
        schema=_schema(
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("dataset", pa.string(), nullable=False),
            pa.field("audio_sha256", pa.string(), nullable=False),
            pa.field("extractor_version", pa.string(), nullable=False),
            *[pa.field(name, pa.float32()) for name in egemaps_feature_names()],
        ),
        keys=("dataset", "clip_id", "audio_sha256", "extractor_version", "config_hash"),
        partition_by=("dataset",),
        description="eGeMAPSv02 functionals (88) per clip, on the normalised 16 kHz signal",
    )


EMBEDDINGS = TableSpec(
    name="embeddings",
    schema=_schema(
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("audio_sha256", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("train_key", pa.string(), nullable=False),
        pa.field("checkpoint_step", pa.int32(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("pooling", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        # Nullable only until every writer (the API too) fills it; see shared.models.transformers_version.
        pa.field("transformers_version", pa.string()),
    ),
    keys=("dataset", "clip_id", "audio_sha256", "model", "train_key", "checkpoint_step", "layer", "pooling"),
    partition_by=("train_key", "checkpoint_step"), array_column="embedding",
    description="pooled hidden states per clip, checkpoint and hidden state (0 = CNN feature projection"
    " + positional convolution; i = output of transformer layer i before any final LayerNorm)",
)


def all_tables() -> tuple[TableSpec, ...]:
    """Every table of the store, in the order views are created."""
    return (CLIPS, egemaps_spec(), EMBEDDINGS, CHECKPOINTS, PROMOTIONS, TRAIN_METRICS, CKA, CKA_CHANGES, CKA_DRIFT,
            CKA_LAYERS, PROBES, PROBE_FEATURES, PROBE_CLASSES, PROBE_CONFUSION, SKIPPED, RUNS, STAGES)


def table(name: str) -> TableSpec:
    """Look a table up by name.

    Raises:
        KeyError: when no table has that name.
    """
    for spec in all_tables():
        if spec.name == name:
            return spec
    raise KeyError(f"unknown table {name!r}; known: {[t.name for t in all_tables()]}")
