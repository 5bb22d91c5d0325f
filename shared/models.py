"""Speech encoders: identity, loading, padding-aware pooling, and the SER classifier.

Real weights (``microsoft/wavlm-large`` or a local folder) and the tiny random models of
the demo and the tests go through the same ``load_encoder``: the tiny ones are written
with ``save_pretrained`` first (``create_random_encoder``) and loaded back from disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from serlens.shared import settings
from serlens.shared.encoders import SUPPORTED_MODEL_TYPES as SUPPORTED_MODEL_TYPES
from serlens.shared.encoders import TINY_WAVLM as TINY_WAVLM
from serlens.shared.encoders import check_model_type
from serlens.shared.encoders import create_random_encoder as create_random_encoder
from serlens.shared.encoders import save_feature_extractor as save_feature_extractor
from serlens.shared.errors import InvalidConfigError, ModelLoadError
from serlens.shared.fast_wavlm import FastWavLM, fallback_reason

HEAD_FILENAME = "classifier_head.pt"
LABELS_FILENAME = "labels.json"

@dataclass(frozen=True)
class ModelBundle:
    """A speech encoder's identity, carried with its weights.

    Attributes:
        name_or_path: hub id or local folder it was loaded from.
        revision: hub revision (None for a local folder or the default branch).
        model_type: transformers' ``model_type`` (``wavlm``, ``hubert``, ``wav2vec2``...).
        sampling_rate: the rate it expects, in Hz.
        num_layers: transformer layers; hidden states are ``num_layers + 1`` (see
            ``HIDDEN_STATE_DEFINITION``: 0 = CNN feature projection + positional convolution).
        hidden_size: width of every hidden state.
        do_normalize: whether inputs are standardised per clip (its feature extractor's setting).
        supports_padding_mask: whether padded batches can be masked exactly (layer-norm feature
            encoders); group-norm encoders (wavlm-base) and data2vec-audio are embedded one
            length at a time.
        random_init: the weights are random (tests, demo): numbers mean nothing about the model.
    """

    name_or_path: str
    revision: str | None
    model_type: str
    sampling_rate: int
    num_layers: int
    hidden_size: int
    do_normalize: bool
    supports_padding_mask: bool
    random_init: bool = False

    @property
    def takes_attention_mask(self) -> bool:
        """Whether padded batches get a padding mask (data2vec-audio's is inexact, but better than none)."""
        return self.supports_padding_mask or self.model_type == "data2vec-audio"

    @property
    def num_hidden_states(self) -> int:
        """Hidden states per clip: the CNN projection (+ positional convolution) and every layer."""
        return self.num_layers + 1

    @property
    def identity(self) -> str:
        """A short stable name for tables and MLflow (``name@revision``)."""
        return f"{self.name_or_path}@{self.revision}" if self.revision else self.name_or_path


def resolve_device(setting: str) -> torch.device:
    """The device a ``device`` setting means: ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda``.

    Args:
        setting: ``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``.

    Raises:
        InvalidConfigError: CUDA asked for where none is visible, or an unknown name.
    """
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda" or setting.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InvalidConfigError(f"device {setting!r} requested but no CUDA device is visible")
        return torch.device(setting)
    raise InvalidConfigError(f"device {setting!r}; expected 'auto', 'cpu' or 'cuda'")


def load_encoder(
    name_or_path: str,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    local_files_only: bool | None = None,
) -> tuple[nn.Module, ModelBundle]:
    """Load a Hugging Face speech encoder (``SUPPORTED_MODEL_TYPES``) and its identity.

    Args:
        name_or_path: a local folder written by ``save_pretrained`` or a hub id.
        revision: hub revision.
        device: where to put the model.
        local_files_only: forbid downloads (default: True when ``name_or_path`` is a folder
            or ``HF_HUB_OFFLINE`` is set).

    Raises:
        UnsupportedModelError: a model of another type (the message lists the supported ones).
        ModelLoadError: when the folder or id cannot be loaded as an encoder.
    """
    from transformers import AutoConfig

    is_local = Path(name_or_path).is_dir()
    offline = local_files_only if local_files_only is not None else (is_local or settings.hf_hub_offline())
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, local_files_only=offline)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load a speech encoder from {name_or_path!r}: {err}") from err
    check_model_type(config.model_type, name_or_path)
    try:
        model, do_normalize, sampling_rate = _load_weights_and_extractor(name_or_path, revision, offline,
                                                                         whisper=config.model_type == "whisper")
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load a speech encoder from {name_or_path!r}: {err}") from err
    bundle = ModelBundle(
        name_or_path=str(name_or_path),
        revision=revision,
        model_type=config.model_type,
        sampling_rate=sampling_rate,
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        do_normalize=do_normalize,
        supports_padding_mask=_exact_under_padding(config),
        random_init=bool(getattr(config, "serlens_random_init", False)),
    )
    return model.to(device).eval(), bundle


def _exact_under_padding(config: Any) -> bool:
    """Whether a padded batch gives each clip the numbers it gets alone.

    Not for group-norm CNNs (wavlm-base: the norm spans the padding), nor for data2vec-audio,
    whose stacked positional convolutions turn the zeroed padding into non-zero frames that the
    next layer reads into the clip's last frames (measured: up to 0.12 on hidden state 0).
    """
    return getattr(config, "feat_extract_norm", "layer") == "layer" and config.model_type != "data2vec-audio"


def _load_weights_and_extractor(name_or_path: str, revision: str | None, offline: bool, *,
                                whisper: bool) -> tuple[nn.Module, bool, int]:
    """The encoder and how raw audio is fed to it: ``(model, do_normalize, sampling_rate)``.

    Raises:
        ModelLoadError: a missing or unreadable feature extractor config.
    """
    from transformers import AutoFeatureExtractor, AutoModel

    if whisper:  # log-mel input, computed inside the wrapper; no per-clip standardisation of samples
        from serlens.shared.whisper import load_whisper_encoder

        encoder = load_whisper_encoder(name_or_path, revision=revision, offline=offline)
        return encoder, False, int(encoder.extractor.sampling_rate)
    model = AutoModel.from_pretrained(name_or_path, revision=revision, local_files_only=offline)
    # The extractor's settings decide how raw audio is fed (per-clip standardisation, rate):
    # guessing them would feed the encoder inputs it was not trained on, so a missing or
    # unreadable config is an error, not a default.
    try:
        extractor = AutoFeatureExtractor.from_pretrained(name_or_path, revision=revision, local_files_only=offline)
        return model, bool(extractor.do_normalize), int(extractor.sampling_rate)
    except (OSError, ValueError, AttributeError) as err:
        raise ModelLoadError(
            f"{name_or_path!r}: its feature extractor config (preprocessor_config.json) is missing or unreadable "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); save it beside the weights with "
            "AutoFeatureExtractor.from_pretrained(<base model>).save_pretrained(<folder>)"
        ) from err


#: Added to a clip's variance before the square root when it is standardised (as Hugging Face's
#: ``Wav2Vec2FeatureExtractor`` does); the trainer, the embedding feed and ``prepare_batch`` share it.
NORMALIZE_EPSILON = 1e-7


def standardize(signal: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance over the clip's own samples (float32), as the feature extractor does."""
    x = np.asarray(signal, dtype=np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + NORMALIZE_EPSILON)


def standardize_into(signal: np.ndarray, out: np.ndarray, scratch: np.ndarray | None = None) -> None:
    """``standardize(signal)`` written into ``out`` (float32, same length), bit for bit, in fewer passes.

    The centred samples, computed once in ``out``, serve both numpy's variance and the result.
    ``scratch`` (float32, at least as long) holds the squares, so that no clip allocates.
    """
    x = np.asarray(signal, dtype=np.float32)
    np.subtract(x, x.mean(), out=out)
    squares = np.square(out, out=None if scratch is None else scratch[: len(out)])
    variance = np.add.reduce(squares) / np.float32(len(out))
    np.divide(out, np.sqrt(variance + NORMALIZE_EPSILON), out=out)


def fill_host(signals: Sequence[np.ndarray], out: np.ndarray, *, normalize: bool = False) -> np.ndarray:
    """Right-pad float32 clips into ``out`` (a reused float32 buffer of at least clips x longest).

    One copy per clip, zeros only past its end; with ``normalize`` each clip is standardised as
    it is copied (``standardize_into``: the CPU-only path; beside a GPU, ``normalize_on_device``).
    Returns the real length of each clip, int64.
    """
    lengths = np.array([len(signal) for signal in signals], dtype=np.int64)
    scratch = np.empty(int(lengths.max(initial=0)), dtype=np.float32) if normalize else None
    for i, (signal, n) in enumerate(zip(signals, lengths.tolist(), strict=True)):
        if normalize:
            standardize_into(signal, out[i, :n], scratch)
        else:
            out[i, :n] = signal
        out[i, n:] = 0.0
    return lengths


def normalize_on_device(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Standardise each row over its first ``lengths[i]`` samples; padding stays 0.

    The same arithmetic as ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` (population
    variance, ``NORMALIZE_EPSILON``), batched on whatever device ``values`` is on.

    Args:
        values: (clips, samples) float32, zero past each clip's end.
        lengths: (clips,) int64, on the same device.
    """
    valid = torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]
    count = lengths.to(values.dtype)[:, None]
    centred = (values - values.sum(1, keepdim=True) / count).masked_fill_(~valid, 0.0)
    scale = torch.rsqrt(centred.square().sum(1, keepdim=True) / count + NORMALIZE_EPSILON)
    return centred.mul_(scale)


def check_encoder_input(signal: np.ndarray, sampling_rate: int, bundle: ModelBundle, *, min_samples: int,
                        max_samples: int | None = None, name: str = "signal") -> np.ndarray:
    """The signal as float32 if an encoder can take it.

    Silence is accepted: standardised, it is just zeros to the encoder.

    Args:
        signal: mono float samples.
        sampling_rate: its rate, in Hz.
        bundle: the encoder's identity (its rate and type).
        min_samples: fewest samples that give one frame.
        max_samples: the encoder's window (Whisper: 30 s), or None for no limit.
        name: how to name the signal in errors.

    Raises:
        InvalidAudioError: another rate than the model's, integer samples, not 1-D, empty, NaN,
            fewer samples than one frame needs, or more than the encoder's window.
    """
    from serlens.shared.audio import check_input_signal
    from serlens.shared.errors import InvalidAudioError

    array = check_input_signal(signal, sampling_rate, expected_rate=bundle.sampling_rate, name=name,
                               rate_hint=f" (the rate of {bundle.name_or_path})", min_duration_s=0.0,
                               allow_silence=True)
    if array.size < min_samples:
        raise InvalidAudioError(f"{name}: {array.size} samples, fewer than the {min_samples} the encoder needs "
                                "for one frame")
    if max_samples is not None and array.size > max_samples:
        raise InvalidAudioError(f"{name}: {array.size / sampling_rate:.1f} s is longer than the "
                                f"{max_samples / sampling_rate:g} s window of {bundle.model_type} encoders; "
                                "cut it into segments (manifest start/end)")
    return array


def prepare_batch(
    signals: Sequence[np.ndarray], bundle: ModelBundle, *, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise each clip over its own samples (if the model wants it), then right-pad.

    Returns:
        ``(input_values, attention_mask)`` of shape ``(batch, max_samples)``.
    """
    longest = max(len(s) for s in signals)
    values = np.zeros((len(signals), longest), dtype=np.float32)
    mask = np.zeros((len(signals), longest), dtype=np.int64)
    for i, s in enumerate(signals):
        x = standardize(s) if bundle.do_normalize else np.asarray(s, dtype=np.float32)
        values[i, : len(x)] = x
        mask[i, : len(x)] = 1
    values_t, mask_t = torch.from_numpy(values), torch.from_numpy(mask)
    if torch.device(device).type == "cuda":
        # Pinned memory lets the copy overlap the previous batch's kernels.
        return values_t.pin_memory().to(device, non_blocking=True), mask_t.pin_memory().to(device, non_blocking=True)
    return values_t.to(device), mask_t.to(device)


def frame_mask(model: nn.Module, attention_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Which output frames of each clip are valid (computed from its own samples only)."""
    lengths = model._get_feat_extract_output_lengths(attention_mask.sum(-1))  # type: ignore[operator]
    return torch.arange(num_frames, device=attention_mask.device)[None, :] < lengths[:, None]


def masked_mean(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: ``hidden`` (batch, frames, dim), ``valid`` (batch, frames) bool."""
    weights = valid.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def length_groups(lengths: Sequence[int], bundle: ModelBundle, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches, longest first to keep padding small.

    Encoders without an exact padding mask get batches of equal length only, so that
    no clip ever sees padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < max_batch and (
            bundle.supports_padding_mask or lengths[groups[-1][0]] == lengths[i]
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class SpeechClassifier(nn.Module):
    """Encoder + mean over valid frames of the last hidden layer + one linear layer.

    Args:
        encoder: a wav2vec2-style encoder from ``load_encoder``.
        bundle: its identity.
        labels: class names, in index order.
    """

    def __init__(self, encoder: nn.Module, bundle: ModelBundle, labels: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.bundle = bundle
        self.labels = list(labels)
        self.head = nn.Linear(bundle.hidden_size, len(self.labels))
        self.fast: FastWavLM | None = None  # not a module: it holds ``encoder``, adds no parameters

    def use_fast_forward(self, *, compile_layers: bool = False) -> bool:
        """Run the encoder through ``FastWavLM`` (fused attention) where it covers the model.

        Returns:
            Whether the fast path is on (else Hugging Face's forward stays: another encoder type).
        """
        if self.bundle.model_type == "wavlm" and fallback_reason(self.encoder) is None:
            self.fast = FastWavLM(self.encoder, compile_layers=compile_layers)
        return self.fast is not None

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch, num_labels)."""
        if self.fast is not None:
            lengths = attention_mask.sum(1) if self.bundle.takes_attention_mask else None
            hidden = self.fast.last_hidden_state(input_values, lengths)
        else:
            kwargs = {"attention_mask": attention_mask} if self.bundle.takes_attention_mask else {}
            hidden = self.encoder(input_values, **kwargs).last_hidden_state
        valid = frame_mask(self.encoder, attention_mask, hidden.shape[1])
        return self.head(masked_mean(hidden, valid))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the encoder (``save_pretrained``), the head and the labels into ``folder``."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path)  # type: ignore[operator]
        if self.bundle.model_type != "whisper":  # Whisper's wrapper writes its own log-mel extractor
            save_feature_extractor(path, sampling_rate=self.bundle.sampling_rate,
                                   do_normalize=self.bundle.do_normalize,
                                   attention_mask=self.bundle.takes_attention_mask)
        torch.save(self.head.state_dict(), path / HEAD_FILENAME)
        (path / LABELS_FILENAME).write_text(json.dumps(self.labels))
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, device: str | torch.device = "cpu",
             base: ModelBundle | None = None) -> SpeechClassifier:
        """Load a checkpoint written by ``save``.

        Raises:
            ModelLoadError: when the folder has no classifier head.
        """
        path = Path(folder)
        if not (path / HEAD_FILENAME).is_file():
            raise ModelLoadError(f"{path} holds no classifier head ({HEAD_FILENAME}); is it a fine-tuned checkpoint?")
        encoder, bundle = load_encoder(str(path), device=device)
        if base is not None:
            bundle = ModelBundle(**{**base.__dict__, "name_or_path": str(path)})
        model = cls(encoder, bundle, json.loads((path / LABELS_FILENAME).read_text()))
        model.head.load_state_dict(torch.load(path / HEAD_FILENAME, map_location=device))
        return model.to(device).eval()
