"""openSMILE eGeMAPSv02 functionals (88 per clip) on the normalised 16 kHz signal."""

from services.egemaps.config import EgemapsArgs, EgemapsConfig
from services.egemaps.service import EgemapsService

__all__ = ["EgemapsArgs", "EgemapsConfig", "EgemapsService"]
