"""CKA of each (checkpoint, layer) embedding with a reference (eGeMAPS): linear and debiased."""

from services.cka.config import CkaArgs, CkaConfig
from services.cka.service import CkaService

__all__ = ["CkaArgs", "CkaConfig", "CkaService"]
