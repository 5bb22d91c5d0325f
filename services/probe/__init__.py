"""Layer-wise linear probes: SER macro-F1 per (checkpoint, layer) and for eGeMAPS, over seeds."""

from services.probe.config import ProbeArgs, ProbeConfig
from services.probe.service import ProbeService

__all__ = ["ProbeArgs", "ProbeConfig", "ProbeService"]
