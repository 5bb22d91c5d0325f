"""The drift noise floor: the same checkpoint embedded twice in other batches, fp32."""

from __future__ import annotations

import numpy as np

from serlens.cka import CkaArgs, CkaService
from serlens.embed.config import EmbedArgs
from serlens.embed.service import EmbedService
from serlens.shared.models import create_random_encoder


def test_reembedding_in_other_batches_gives_cka_of_at_least_0_99999(tmp_path):
    model = str(create_random_encoder(tmp_path / "encoder", seed=4))
    rng = np.random.default_rng(0)
    signals = [0.1 * rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(4000, 12000, 16)]
    first = EmbedService(config=EmbedArgs(batch_size=5).to_config(), model=model).process_batch(signals)
    order = rng.permutation(16)
    again = EmbedService(config=EmbedArgs(batch_size=3).to_config(), model=model).process_batch(
        [signals[i] for i in order])[np.argsort(order)]
    layers = range(first.shape[1])
    tables = CkaService(config=CkaArgs(permutations=0).to_config()).analyse(
        {(0, layer): first[:, layer] for layer in layers}, rng.normal(size=(16, 3)),
        reembedded={layer: again[:, layer] for layer in layers})
    floor = [r["value"] for r in tables.drift if r["against"] == "reembed"]
    assert len(floor) == 2 * len(layers)
    assert min(floor) >= 0.99999, floor
