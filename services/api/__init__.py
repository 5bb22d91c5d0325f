"""The HTTP API: a FastAPI ingress on Ray Serve over the Normalize, Egemaps, Embed, Predict apps."""

from serlens.api.config import ApiArgs, ApiConfig

__all__ = ["ApiArgs", "ApiConfig"]
