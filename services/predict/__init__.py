"""Emotion probabilities from a fine-tuned checkpoint (encoder + mean pooling + linear head)."""

from serlens.predict.config import PredictArgs, PredictConfig
from serlens.predict.service import PredictService

__all__ = ["PredictArgs", "PredictConfig", "PredictService"]
