"""Mean-pooled hidden states of a Hugging Face speech encoder, per clip and layer."""

from serlens.embed.config import EmbedArgs, EmbedConfig
from serlens.embed.service import EmbedService

__all__ = ["EmbedArgs", "EmbedConfig", "EmbedService"]
