"""The study's configuration: YAML -> ``StudyArgs`` (validated once, unknown keys rejected).

Each service owns its section's ``Args``; this module only composes them, applies
``--set key=value`` overrides. The keys that decide what a run can reuse from the store are
built in ``serlens.shared.keys``.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serlens.cka.config import CkaArgs
from serlens.egemaps.config import EgemapsArgs
from serlens.embed.config import EmbedArgs
from serlens.normalize.config import NormalizeArgs
from serlens.probe.config import ProbeArgs
from serlens.shared import model_uris
from serlens.shared.errors import InvalidConfigError
from serlens.shared.schema import EMOTIONS
from serlens.shared.tracking import TrackingConfig, tracking_config
from serlens.trainer.config import TrainArgs

#: The demo's model: a tiny random WavLM written into the workdir with save_pretrained.
DEMO_MODEL = "serlens:tiny-random-wavlm"

#: The run configs serlens ships (package data in ``serlens.deploy``), by name.
SHIPPED_CONFIGS = ("demo", "crema-d")
#: The config ``serlens run`` uses when none is given.
DEFAULT_CONFIG_NAME = "demo"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetArgs(_Section):
    """Where the clips come from."""

    kind: Literal["demo", "crema-d", "manifest"] = Field(
        "demo",
        description=(
            "where the clips come from: demo (a generated corpus), crema-d (a CREMA-D checkout) or manifest"
            " (a CSV/Parquet list of files)"
        ),
    )
    path: str | None = Field(
        None,
        description=(
            "CREMA-D checkout folder, or manifest file (CSV/Parquet); for the demo, where to write it "
            "(default: <workdir>/demo-corpus)"
        ),
    )
    name: str | None = Field(None, description="name of the dataset in the store (default: the kind)")
    labels: list[str] = Field(default_factory=lambda: list(EMOTIONS), description="class labels, in index order")
    demo_speakers: int = Field(
        20, ge=12,
        description="speakers of the generated demo corpus (at least 12, for the speaker-independent split)",
    )
    demo_sentences_per_emotion: int = Field(4, ge=1, description="sentences each demo speaker says per emotion")
    demo_seed: int = Field(0, description="seed of the generated demo corpus")

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or len(value) < 2:
            raise ValueError(f"labels must be at least two distinct names, got {value}")
        return value


class SplitArgs(_Section):
    """The paper's two-phase, speaker-independent, gender-stratified 80/20 split."""

    seed: int = Field(0, description="seed of the speaker split")
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1,
        description="share of the speakers held out from fine-tuning (subset 3: the analyses' clips)",
    )
    validation_fraction: float = Field(
        0.2, gt=0, lt=1,
        description="share of the remaining speakers used for validation during fine-tuning (subset 2)",
    )


class ModelArgs(_Section):
    """The speech encoder to fine-tune: a hub id, a local folder, or the demo's tiny random WavLM."""

    name: str = Field(
        DEMO_MODEL,
        description=(
            "the speech encoder: a Hugging Face hub id, a local folder, or serlens:tiny-random-wavlm (the "
            "demo's)"
        ),
    )
    revision: str | None = Field(
        None,
        description="hub revision (branch, tag or commit) of the model; None: the default branch",
    )


class AnalysisArgs(_Section):
    """Which clips the analyses (eGeMAPS, embeddings, CKA, probes) use."""

    subset: Literal[1, 2, 3] = Field(
        3,
        description=(
            "clips the analyses use: 1 (fine-tuning train), 2 (validation) or 3 (held-out speakers, the "
            "paper's)"
        ),
    )


class TrackingArgs(_Section):
    """MLflow: default a sqlite file and local artifacts in the workdir."""

    uri: str | None = Field(
        None,
        description="MLflow tracking URI (default: a sqlite file in the workdir, artifacts beside it)",
    )
    experiment: str = Field("serlens", description="MLflow experiment the runs are logged to")
    registered_model: str | None = Field(
        "serlens-ser", description="Model Registry name of each fit's best checkpoint (null: register nothing)")
    model_alias: str = Field("champion", description="alias pointed at that version (models:/<name>@<alias>)")

    def to_config(self, workdir: Path) -> TrackingConfig:
        """Where this run tracks (``serlens.shared.tracking.tracking_config``)."""
        return tracking_config(workdir, tracking_uri=self.uri, experiment=self.experiment,
                               registered_model=self.registered_model, model_alias=self.model_alias)


class StudyArgs(_Section):
    """Everything a run needs; one section per service."""

    dataset: DatasetArgs = Field(default_factory=DatasetArgs, description="where the clips come from")
    normalize: NormalizeArgs = Field(default_factory=NormalizeArgs,
                                     description="loudness normalisation of every clip (EBU R128)")
    split: SplitArgs = Field(default_factory=SplitArgs,
                             description="the speaker-independent, gender-stratified split")
    egemaps: EgemapsArgs = Field(default_factory=EgemapsArgs, description="the eGeMAPS functionals (openSMILE)")
    model: ModelArgs = Field(default_factory=ModelArgs, description="the speech encoder to fine-tune")
    train: TrainArgs = Field(default_factory=TrainArgs, description="fine-tuning")
    analysis: AnalysisArgs = Field(default_factory=AnalysisArgs, description="which clips the analyses use")
    embed: EmbedArgs = Field(default_factory=EmbedArgs,
                             description="hidden states of every checkpoint, mean-pooled per layer")
    cka: CkaArgs = Field(default_factory=CkaArgs, description="CKA of each layer against eGeMAPS, with its nulls")
    probe: ProbeArgs = Field(default_factory=ProbeArgs, description="layer-wise probes and their controls")
    tracking: TrackingArgs = Field(default_factory=TrackingArgs, description="MLflow tracking")

    def pin_model(self, workdir: Path) -> StudyArgs:
        """Check a ``models:/`` model and pin its alias to the version it means now (keys name weights).

        Raises:
            InvalidConfigError: a malformed URI.
            NotFoundError: no such registered model, alias or version.
        """
        if not model_uris.is_model_uri(self.model.name):
            return self
        pinned = model_uris.resolve(self.tracking.to_config(workdir), self.model.name).text
        return self.model_copy(update={"model": self.model.model_copy(update={"name": pinned})})

    def to_yaml(self) -> str:
        """The full, resolved config as YAML (what is saved with a run)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise InvalidConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=2e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise InvalidConfigError(f"--set {item!r}: value is not valid YAML: {err}") from err
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a config dict."""
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def shipped_config(name: str) -> Traversable:
    """The shipped run config called ``name`` (``demo`` or ``crema-d``), from the package data.

    Raises:
        InvalidConfigError: no shipped config has that name, or the installation lacks it.
    """
    if name not in SHIPPED_CONFIGS:
        raise InvalidConfigError(f"no shipped config named {name!r}; shipped: {', '.join(SHIPPED_CONFIGS)}")
    resource = importlib.resources.files("serlens.deploy") / f"{name}.yaml"
    if not resource.is_file():
        raise InvalidConfigError(f"the shipped config {name!r} is missing from this installation ({resource})")
    return resource


def resolve_config(path: str | Path | None = None) -> Path | Traversable:
    """Where a config comes from: a file path, a shipped config's name, or the default (``demo``).

    A path that exists wins over a shipped name; a name that is neither is an error, never a
    silent fallback to defaults.

    Raises:
        InvalidConfigError: the file does not exist and no shipped config has that name.
    """
    if path is None:
        return shipped_config(DEFAULT_CONFIG_NAME)
    source = Path(path)
    if source.is_file():
        return source
    if str(path) in SHIPPED_CONFIGS:
        return shipped_config(str(path))
    raise InvalidConfigError(
        f"config file {source} does not exist (shipped configs, by name: {', '.join(SHIPPED_CONFIGS)})"
    )


def load_study_args(path: str | Path | None = None, overrides: Sequence[str] = ()) -> StudyArgs:
    """Read a YAML config (a path, a shipped name, or the default ``demo``), apply overrides, validate.

    Raises:
        InvalidConfigError: missing or unreadable file, unknown keys, bad values; the message names each.
    """
    source = resolve_config(path)
    try:
        loaded = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as err:
        raise InvalidConfigError(f"{source}: not valid YAML: {err}") from err
    except OSError as err:
        raise InvalidConfigError(f"{source}: cannot be read: {err.strerror}") from err
    if not isinstance(loaded, dict):
        raise InvalidConfigError(f"{source}: expected a mapping of sections, got {type(loaded).__name__}")
    data = apply_overrides(loaded, overrides)
    try:
        return StudyArgs.model_validate(data)
    except ValidationError as err:
        problems = "\n".join(_describe(e, source, overrides) for e in err.errors())
        raise InvalidConfigError(f"invalid config:\n{problems}") from err


def _describe(error: Any, source: object, overrides: Sequence[str]) -> str:
    """One validation problem: where it came from (a ``--set`` or the file), what, and a suggestion."""
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    culprit = next((item for item in reversed(overrides) if item.partition("=")[0].strip() == key), None)
    where = f"--set {culprit}" if culprit else f"{source}"
    message = f"  {key}: {error['msg']} (from {where})"
    if error["type"] == "extra_forbidden":
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        if close:
            message += f"; did you mean {'.'.join([*loc[:-1], close[0]])!r}?"
        else:
            message += f"; known keys: {', '.join(known)}"
    return message


def _fields_at(path: Sequence[str]) -> list[str]:
    """The config keys under a section path (``[]``: the sections; ``["train"]``: train's keys)."""
    model: Any = StudyArgs
    for part in path:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(model.model_fields)
