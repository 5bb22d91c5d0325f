"""Layer-wise linear probes: SER macro-F1 per (checkpoint, layer) and for eGeMAPS, over seeds."""

from serlens.probe.config import ProbeArgs, ProbeConfig
from serlens.probe.service import ProbeService

__all__ = ["ProbeArgs", "ProbeConfig", "ProbeService"]
