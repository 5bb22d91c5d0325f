"""CKA of each (checkpoint, layer) embedding with a reference (eGeMAPS): linear and debiased."""

from serlens.cka.config import CkaArgs, CkaConfig
from serlens.cka.service import CkaService

__all__ = ["CkaArgs", "CkaConfig", "CkaService"]
