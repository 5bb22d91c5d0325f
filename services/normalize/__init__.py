"""Loudness normalisation (ITU-R BS.1770-4, pyloudnorm) of 16 kHz mono signals to a target LUFS."""

from services.normalize.config import NormalizeArgs, NormalizeConfig
from services.normalize.service import NormalizeService

__all__ = ["NormalizeArgs", "NormalizeConfig", "NormalizeService"]
