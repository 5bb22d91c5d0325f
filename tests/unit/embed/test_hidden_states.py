"""Hidden states as serlens defines them, whatever the transformers version; layer labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serlens.shared.errors import InvalidInputError
from serlens.shared.hidden_states import encoder_hidden_states, transformers_version
from serlens.shared.models import create_random_encoder, load_encoder
from serlens.shared.rows import embedding_table


@pytest.fixture(scope="module")
def stable_model(tmp_path_factory):
    model, _ = load_encoder(str(create_random_encoder(tmp_path_factory.mktemp("stable"), seed=3)))
    return model


def test_last_hidden_state_is_taken_before_the_final_layer_norm(stable_model):
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        hidden = encoder_hidden_states(stable_model, x)
        output = stable_model(x)
        normed = stable_model.encoder.layer_norm(hidden[-1])
    assert len(hidden) == stable_model.config.num_hidden_layers + 1
    # The model's own last_hidden_state is after the final LayerNorm; ours is the layer output.
    assert not torch.allclose(hidden[-1], output.last_hidden_state, atol=1e-3)
    torch.testing.assert_close(normed, output.last_hidden_state)


def test_hidden_state_zero_is_projection_plus_positional_convolution(stable_model):
    x = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        hidden = encoder_hidden_states(stable_model, x)
        features = stable_model.feature_extractor(x).transpose(1, 2)
        projected, _ = stable_model.feature_projection(features)
        expected = projected + stable_model.encoder.pos_conv_embed(projected)
    torch.testing.assert_close(hidden[0], expected)


def test_rows_carry_the_hidden_state_index_and_the_transformers_version():
    items = [{"clip_id": f"c{i}", "dataset": "demo", "audio_sha256": f"h{i}"} for i in range(2)]
    pooled = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    table = embedding_table(items, pooled, layers=(0, 12, 24), model="m", train_key="t", step=50)
    assert table.column("layer").to_pylist() == [0, 12, 24, 0, 12, 24]
    assert set(table.column("transformers_version").to_pylist()) == {transformers_version()}
    rows = table.to_pylist()
    assert rows[4]["embedding"] == pooled[1, 1].tolist()
    with pytest.raises(InvalidInputError, match="indices"):
        embedding_table(items, pooled, layers=(0, 12), model="m", train_key="t", step=50)
