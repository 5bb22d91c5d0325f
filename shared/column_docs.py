"""What every column of the feature store means: the text of ``COMMENT ON COLUMN`` and ``serlens schema``.

Kept as data beside the schemas (``serlens.shared.schema``): a column's meaning is stated once,
here, whichever tables carry it. ``describe(table, column)`` answers for any column of any
table; a test checks that every column has an answer.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict  # pydantic (GET /schema) needs it before Python 3.12

from serlens.shared.egemaps_names import EGEMAPS_FEATURE_NAMES


class ColumnDoc(TypedDict):
    """One column as ``serlens schema`` and ``GET /schema`` give it."""

    name: Annotated[str, Field(description="the column's name")]
    type: Annotated[str, Field(description="its Arrow type, e.g. `int32`, `timestamp[us, tz=UTC]`")]
    nullable: Annotated[bool, Field(description="whether a row may leave it null")]
    description: Annotated[str | None, Field(description="what it means (null: nothing written down)")]


class TableDoc(TypedDict):
    """One table as ``serlens schema`` and ``GET /schema`` give it."""

    table: Annotated[str, Field(description="the table's (and its view's) name")]
    description: Annotated[str, Field(description="what a row of it is")]
    keys: Annotated[list[str], Field(description="the columns that identify a row (the view keeps the newest)")]
    partition_by: Annotated[list[str], Field(description="the columns whose values name its folders")]
    columns: Annotated[list[ColumnDoc], Field(description="every column, in order")]

#: Columns that mean the same in every table that has them.
COMMON: dict[str, str] = {
    "config_hash": "lineage: hash of the config (or stage key) that produced the row",
    "created_at": ("lineage: when the row was written (UTC); the newest row per key wins, "
                   "so filter on it for as-of queries"),
    "clip_id": "the clip's identifier, unique within its dataset (CREMA-D: the file name without extension)",
    "dataset": "dataset name from the manifest",
    "audio_sha256": "SHA-256 of the normalised audio the row was computed from (joins rows of the same audio)",
    "train_key": "the fine-tuning run: hash of the data split, model and training settings",
    "checkpoint_step": "optimizer step of the checkpoint (0 = the pretrained model before fine-tuning)",
    "layer": "hidden state: 0 = CNN feature projection + positional convolution, i = output of transformer layer i",
    "model": "encoder the checkpoint starts from (Hugging Face id or folder)",
    "run_id": "MLflow run id of the fine-tuning run",
    "estimator": "CKA estimator: linear (Kornblith et al. 2019) or debiased (unbiased HSIC, Song et al. 2012)",
    "n_clips": "analysis clips (subset 3) the value was computed on",
    "value": "the statistic's value",
    "p_value": "p-value (the method is in the table's comment)",
    "q_value": "Benjamini-Hochberg q-value over the table's grid of tests",
    "std_error": "standard error (delete-one-speaker jackknife)",
    "ci_low": "lower end of the confidence interval (delete-one-speaker jackknife, configured level)",
    "ci_high": "upper end of the confidence interval (delete-one-speaker jackknife, configured level)",
    "features": "what the probe reads: 'embedding' (pooled hidden state) or 'egemaps' (the 88 functionals)",
    "protocol": "probe protocol: 'paper' (one stratified 80/10/10 split) or 'grouped_cv' (speaker-grouped K-fold)",
    "source": "what produced the predictions: best_probe, egemaps_probe or classifier (the fine-tuned model)",
    "stage": "pipeline stage name",
    "epoch": "training epoch (fractional: steps / steps per epoch)",
}

#: Columns whose meaning depends on their table.
TABLES: dict[str, dict[str, str]] = {
    "clips": {
        "source_path": "the audio file as the manifest gave it",
        "speaker": "speaker id (speaker-independent subsets never share one)",
        "gender": "speaker gender as the manifest gives it (the split balances it)",
        "label": "emotion label (CREMA-D codes ANG DIS FEA HAP NEU SAD, or the configured label set)",
        "sentence": "sentence or transcript id, when the manifest has one",
        "subset": "1 = fine-tuning train, 2 = validation, 3 = analysis (CKA and probes)",
        "duration_s": "clip length in seconds",
        "sampling_rate": "sampling rate of the normalised audio (Hz)",
        "source_sampling_rate": "sampling rate of the source file (Hz)",
        "source_num_channels": "channels of the source file (downmixed to mono)",
        "lufs_before": "integrated loudness of the source (LUFS, ITU-R BS.1770)",
        "lufs_after": "integrated loudness after normalisation (LUFS; target -23)",
        "gain_db": "gain applied by the loudness normalisation (dB)",
        "peak_dbfs": "sample peak after normalisation (dBFS)",
        "clipped_fraction": "share of samples at or beyond full scale after normalisation",
        "loudness_policy": "what was done when the gain would clip: the configured policy",
        "target_lufs": "loudness target (LUFS)",
        "normalized_path": "the normalised 16 kHz WAV the features and embeddings read, relative to the workdir "
                           "(older stores: absolute)",
        "normalized_sha256": "SHA-256 of the normalised WAV file's bytes",
        "start_s": "where the clip starts in the source file, seconds (null: at its start; manifest column start)",
        "end_s": "where the clip ends in the source file, seconds (null: at its end; manifest column end)",
        "split": "the manifest's split (train, validation, analysis) that set subset; null: serlens' speaker split",
    },
    "egemaps": {
        "extractor_version": "openSMILE version and feature set that computed the row",
    },
    "embeddings": {
        "pooling": "how frames became one vector per clip (mean over the clip's valid frames)",
        "embedding": "the pooled hidden state: a fixed-size array FLOAT[dim] (a list FLOAT[] when the store "
                     "holds encoders of different widths)",
        "transformers_version": "transformers version that ran the encoder",
    },
    "checkpoints": {
        "uri": "where the checkpoint is tracked (MLflow artifact URI), if logged",
        "local_path": "the checkpoint folder (save_pretrained), relative to the workdir "
                      "(older stores: absolute)",
        "train_loss": "mean training loss since the previous checkpoint",
        "val_loss": "validation loss (subset 2) at the checkpoint",
        "val_f1_macro": "validation macro-F1 (subset 2) at the checkpoint",
    },
    "promotions": {
        "target": "the serving target: 'default' (what /embed and /predict serve; the newest row wins)",
        "promoted_by": "token name (or 'cli:<OS user>' for the command line) that made the promotion",
        "note": "free text given with the promotion",
    },
    "train_metrics": {
        "step": "optimizer step",
        "name": "metric name: train_loss, val_loss or val_f1_macro",
    },
    "cka": {
        "reference": "what the embeddings are compared with (eGeMAPS functionals, standardised)",
        "effective_rank": "effective rank of the embedding's centred Gram (participation ratio)",
        "effective_rank_reference": "effective rank of the reference's centred Gram",
        "null_mean": "analytic expectation of linear CKA between independent representations of these ranks",
        "null_mean_permuted": "mean CKA over the permutations (the null the p-value uses)",
        "permutation_scheme": "how clips were permuted: within_speaker or plain",
        "permutations": "number of permutations behind p_value",
        "n_speakers": "speakers among the analysis clips (the jackknife's units)",
        "partial_value": "CKA after regressing the confounds out of both Grams",
        "confounds": "factors regressed out for partial_value (comma-separated)",
    },
    "cka_changes": {
        "baseline": "what the checkpoint is compared with: step0 or previous",
        "baseline_step": "the step of the baseline checkpoint",
        "difference": "CKA at the checkpoint minus CKA at the baseline (same layer)",
        "p_value": "paired jackknife t-test p-value (speakers - 1 degrees of freedom)",
    },
    "cka_drift": {
        "against": "step0, previous, or reembed (checkpoint 0 re-embedded in other batches: the noise floor)",
        "against_step": "the step of the checkpoint compared with",
        "value": "CKA between this cell's embeddings and the same layer at against_step",
    },
    "cka_layers": {
        "layer_a": "first hidden state of the pair",
        "layer_b": "second hidden state of the pair",
        "value": "CKA between the two layers' embeddings within the checkpoint",
    },
    "probes": {
        "head": "probe head: linear or mlp (one hidden ReLU layer)",
        "task": ("emotion, or control (each speaker's labels shuffled among that speaker's clips; "
                 "selectivity = emotion - control, Hewitt and Liang 2019)"),
        "weights": "which weights scored the test part: best (best validation) or stop (the stop epoch)",
        "seed": "initialisation seed of the probe",
        "f1_macro": "macro-F1 of this seed on its test clips",
        "accuracy": "accuracy of this seed on its test clips",
        "epochs": "epochs trained before early stopping",
        "val_loss": "best validation loss of this seed",
        "f1_macro_cell": "the cell's macro-F1 over the pooled out-of-fold predictions (mean over seeds)",
        "f1_low": "lower end of the speaker-level interval of f1_macro_cell",
        "f1_high": "upper end of the speaker-level interval of f1_macro_cell",
        "f1_std_error": "speaker-level standard error of f1_macro_cell",
        "interval": "how the interval was computed (speaker jackknife or speaker bootstrap)",
        "seed_std": "standard deviation of f1_macro over seeds (initialisation noise only)",
        "num_classes": "number of classes (chance macro-F1 depends on it)",
    },
    "probe_features": {
        "target": "the eGeMAPS functional predicted (standardised)",
        "target_group": ("its parameter group (Eyben et al. 2016): frequency, energy/amplitude, "
                         "spectral balance, temporal"),
        "r2": "out-of-fold R² (speaker-grouped K-fold, alpha by nested grouped CV)",
        "r2_control": "R² with the targets permuted within the same folds (the null)",
        "selectivity": "r2 minus r2_control",
        "alpha_median": "median over folds of the ridge penalty chosen by the inner CV",
        "folds": "outer folds (K)",
    },
    "probe_classes": {
        "label": "the class",
        "f1": "per-class F1 on the analysis clips",
        "support": "clips of the class",
        "chance_f1": "F1 of guessing by the class's share of the clips",
    },
    "probe_confusion": {
        "true_label": "the clip's label",
        "predicted_label": "what the source predicted",
        "count": "clips (summed over seeds)",
    },
    "skipped": {
        "item": "what was left out (a manifest row, a file)",
        "reason": "why it was left out",
    },
    "runs": {
        "run_id": "the serlens run's id",
        "status": "running, finished or failed",
        "config_yaml": "the resolved config the run used",
        "serlens_version": "serlens version that ran it",
        "seconds": "wall time of the run",
        "data_key": "stage key of the normalised data (clips)",
        "embed_hash": "stage key of the embeddings",
        "analysis_key": "stage key of the CKA and probe analyses",
        "mlflow_run_id": "MLflow run of the fine-tuning",
        "tracking_uri": "MLflow tracking URI",
        "summary_json": "headline numbers of the run (JSON)",
        "egemaps_key": "stage key of the eGeMAPS features",
        "provenance_json": "package versions, git commit, hardware and model revision at run time (JSON)",
    },
    "stages": {
        "stage_key": "hash of the stage's inputs and settings: the same key is reused, not recomputed",
        "rows": "rows the stage wrote",
        "seconds": "how long the stage took",
        "nodes_json": "items processed per Ray node (JSON), for stages that fan out",
    },
}

_EGEMAPS = set(EGEMAPS_FEATURE_NAMES)


def describe(table: str, column: str) -> str | None:
    """What ``column`` of ``table`` means, or None when nothing is written down for it."""
    if table == "egemaps" and column in _EGEMAPS:
        return f"eGeMAPSv02 functional {column} (openSMILE's name; egemaps_long gives its parameter group)"
    return TABLES.get(table, {}).get(column) or COMMON.get(column)


def schema_listing(name: str | None = None) -> list[TableDoc]:
    """Every table (or one) with its meaning, keys and columns (name, type, nullable, meaning).

    What ``serlens schema`` prints and ``GET /schema`` returns.

    Raises:
        NotFoundError: no table of that name (the message lists them).
    """
    from serlens.shared.errors import NotFoundError
    from serlens.shared.schema import all_tables

    tables = [t for t in all_tables() if name is None or t.name == name]
    if not tables:
        raise NotFoundError(f"no table {name!r}; tables: {', '.join(t.name for t in all_tables())}")
    return [TableDoc(table=t.name, description=t.description, keys=list(t.keys), partition_by=list(t.partition_by),
                     columns=[ColumnDoc(name=f.name, type=str(f.type), nullable=f.nullable,
                                        description=describe(t.name, f.name)) for f in t.schema])
            for t in tables]


def schema_text(name: str | None = None) -> str:
    """``schema_listing`` as text: a block per table, a line per column (name, type, meaning)."""
    blocks = []
    for entry in schema_listing(name):
        width = max(len(c["name"]) for c in entry["columns"])
        partitions = ", ".join(entry["partition_by"])
        lines = [f"{entry['table']}: {entry['description']}",
                 f"  keys: {', '.join(entry['keys'])}" + (f"; partitioned by {partitions}" if partitions else "")]
        lines += [f"  {c['name']:<{width}}  {c['type']:<12}  {c['description']}" for c in entry["columns"]]
        blocks.append("\n".join(lines))
    views = ("views over them: latest_run; latest_<table> and run_<table>(run_id) for the tables a run's "
             "stage keys select; egemaps_long (clip, feature, parameter_group, value)")
    return "\n\n".join(blocks) + ("\n\n" + views if name is None else "") + "\n"


def schema_json(name: str | None = None) -> str:
    """``schema_listing`` as JSON."""
    import json

    return json.dumps(schema_listing(name), indent=2) + "\n"
