"""openSMILE eGeMAPSv02 functionals (88 per clip) on the normalised 16 kHz signal."""

from serlens.egemaps.config import EgemapsArgs, EgemapsConfig
from serlens.egemaps.service import EgemapsService

__all__ = ["EgemapsArgs", "EgemapsConfig", "EgemapsService"]
