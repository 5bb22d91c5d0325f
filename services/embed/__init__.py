"""Mean-pooled hidden states of a Hugging Face speech encoder, per clip and layer."""

from services.embed.config import EmbedArgs, EmbedConfig
from services.embed.service import EmbedService

__all__ = ["EmbedArgs", "EmbedConfig", "EmbedService"]
