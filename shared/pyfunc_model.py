"""The ``python_function`` face of a fine-tuned checkpoint, for ``mlflow.pyfunc.load_model`` users.

serlens itself never goes through it: it loads the ``checkpoint`` folder inside the model's
artifacts with ``SpeechClassifier.load``, as it loads any local checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from serlens.shared.errors import InvalidAudioError


class SpeechClassifierPyfunc(PythonModel):
    """Class probabilities of waveforms, from the checkpoint folder in ``context.artifacts["checkpoint"]``."""

    def load_context(self, context: Any) -> None:
        """Load the checkpoint on the CPU."""
        from serlens.shared.models import SpeechClassifier

        self.model = SpeechClassifier.load(context.artifacts["checkpoint"], device="cpu")

    # ``model_input`` has no annotation on purpose: MLflow would derive the signature from it and
    # replace the tensor signature the model is logged with.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        """Probabilities ``(batch, labels)`` of waveforms ``(batch, samples)`` at the model's rate, float32.

        ``model_input`` is the array, or ``{"waveform": array}`` (the signature's tensor by name).

        Raises:
            InvalidAudioError: when the input is not a 2-D array of finite samples.
        """
        from serlens.shared.models import prepare_batch

        if isinstance(model_input, dict):  # MLflow hands a named tensor over as {name: array}
            model_input = model_input["waveform"]
        waveforms = np.asarray(model_input, dtype=np.float32)
        if waveforms.ndim != 2 or not np.isfinite(waveforms).all():
            raise InvalidAudioError(f"waveform: expected (batch, samples) finite float32, got shape {waveforms.shape}")
        values, mask = prepare_batch(list(waveforms), self.model.bundle)
        with torch.no_grad():
            logits = self.model(values, mask).float()
        return torch.softmax(logits, dim=-1).numpy()
