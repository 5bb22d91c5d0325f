"""Stage keys: the one recipe that decides what the store can reuse.

Every row the pipeline or the API writes carries the key (``config_hash``) of the stage that
produced it: a short hash of that stage's settings and of the keys of its inputs. Both the
pipeline and the API build keys here, so a clip normalised by ``/normalize`` and by
``serlens run`` with the same settings lands under the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def config_hash(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (pydantic models are dumped first)."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, BaseModel):
            return obj.model_dump(mode="json")
        if isinstance(obj, Mapping):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        return obj

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def normalize_key(normalize: Any) -> str:
    """Key of loudness-normalised audio: the normalisation settings alone (content-addressed files)."""
    return config_hash("normalize", normalize)


def egemaps_key(norm_key: str, egemaps: Any) -> str:
    """Key of eGeMAPS rows: the normalisation they ran on and the extractor settings."""
    return config_hash("egemaps", norm_key, egemaps)


#: Embedding settings that decide how fast, not what: the vectors agree within 1e-5 whatever they are
#: (tests/unit/embed), so changing them reuses what the store holds.
EMBED_EXECUTION_FIELDS = frozenset({"batch_size", "max_batch_audio_s", "fast", "compile_layers"})


def embed_key(train_key: str, embed: Any, scope: Any) -> str:
    """Key of embedding rows: the fine-tuning run, the embedding settings and which clips.

    Args:
        train_key: the fine-tuning run whose checkpoints are embedded.
        embed: the embedding settings.
        scope: what selects the clips: the run's analysis settings, or the API's dataset name.
    """
    if isinstance(embed, BaseModel):
        embed = {k: v for k, v in embed.model_dump(mode="json").items() if k not in EMBED_EXECUTION_FIELDS}
    return config_hash("embed", train_key, embed, scope)
