"""The keys of one run's stages, computed once from the config and the scanned clips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serlens.pipeline.config import StudyArgs
from serlens.shared.keys import config_hash, egemaps_key, embed_key, normalize_key
from serlens.shared.schema import ClipRecord


@dataclass(frozen=True)
class StageKeys:
    """Every stage key of a run; a stage reuses what the store holds under its key.

    Attributes:
        norm: normalised audio (the normalisation settings).
        data: the prepared clips (dataset, normalisation, split and every clip's content hash).
        egemaps: eGeMAPS rows (normalisation and extractor settings).
        train: the fine-tuning run (model, training settings, data).
        embed: embedding rows (the fine-tuning run, embedding and analysis settings).
    """

    norm: str
    data: str
    egemaps: str
    train: str
    embed: str

    @classmethod
    def for_study(cls, args: StudyArgs, clips: Sequence[ClipRecord]) -> StageKeys:
        """All keys of a run, known before any stage runs."""
        norm = normalize_key(args.normalize)
        data = config_hash("data", args.dataset, args.normalize, args.split,
                           sorted((c.clip_id, c.audio_sha256, *([c.split] if c.split else [])) for c in clips))
        train = config_hash("train", args.model, args.train, data)
        return cls(norm=norm, data=data, egemaps=egemaps_key(norm, args.egemaps), train=train,
                   embed=embed_key(train, args.embed, args.analysis))

    def analysis(self, args: StudyArgs, clip_ids: Sequence[str]) -> str:
        """Key of the analyses (CKA and probes) over these analysed clips."""
        return config_hash("analysis", self.embed, self.egemaps, args.cka, args.probe, list(clip_ids))
