"""Emotion probabilities from a fine-tuned checkpoint (encoder + mean pooling + linear head)."""

from services.predict.config import PredictArgs, PredictConfig
from services.predict.service import PredictService

__all__ = ["PredictArgs", "PredictConfig", "PredictService"]
