"""Loudness normalisation (ITU-R BS.1770-4, pyloudnorm) of 16 kHz mono signals to a target LUFS."""

from serlens.normalize.config import NormalizeArgs, NormalizeConfig
from serlens.normalize.service import NormalizeService

__all__ = ["NormalizeArgs", "NormalizeConfig", "NormalizeService"]
