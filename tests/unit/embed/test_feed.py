"""The embedding feed path against the previous host-side one, and the service's two paths."""

import contextlib

import numpy as np
import pytest
import torch

from serlens.embed import EmbedArgs, EmbedService
from serlens.embed.feed import Feed
from serlens.shared.models import create_random_encoder, fill_host, load_encoder, normalize_on_device, prepare_batch

RATE = 16_000
LENGTHS = (16_000, 9_137, 400, 12_345, 9_137)


def clips(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    # Offsets and scales that differ per clip: standardisation has something to undo.
    return [(rng.uniform(-0.2, 0.2) + rng.uniform(0.01, 0.5) * rng.standard_normal(n)).astype(np.float32)
            for n in lengths]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_encoder(str(create_random_encoder(tmp_path_factory.mktemp("enc") / "m")))[1]


def test_fill_host_overwrites_a_dirty_buffer_with_zero_padding():
    signals = clips()
    out = np.full((len(signals), max(LENGTHS)), 7.0, dtype=np.float32)
    lengths = fill_host(signals, out)
    assert lengths.tolist() == list(LENGTHS) and lengths.dtype == np.int64
    for i, s in enumerate(signals):
        assert np.array_equal(out[i, : len(s)], s) and not out[i, len(s) :].any()


def test_device_normalisation_equals_the_host_path(bundle):
    signals = clips()
    reference, mask = prepare_batch(signals, bundle)
    values = torch.zeros(len(signals), max(LENGTHS))
    lengths = torch.from_numpy(fill_host(signals, values.numpy()))
    normalised = normalize_on_device(values, lengths)
    assert torch.equal(lengths, mask.sum(1))
    torch.testing.assert_close(normalised, reference, atol=2e-6, rtol=0)
    assert not normalised[2, 400:].any()
    for i, n in enumerate(LENGTHS):
        row = normalised[i, :n].double()
        assert abs(row.mean()) < 1e-5 and abs(row.std(unbiased=False) - 1) < 1e-4


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("do_normalize", [False, True])
def test_feed_yields_every_planned_batch_as_the_host_path_would(bundle, overlap, do_normalize):
    signals = clips()
    plan = [[0, 3], [1, 4], [2], [4, 1, 2]]
    feed = Feed(device="cpu", do_normalize=do_normalize, overlap=overlap)
    host_bundle = bundle.__class__(**{**bundle.__dict__, "do_normalize": do_normalize})
    seen = []
    for _ in range(2):  # a second pass reuses the buffers
        for indices, batch in zip(plan, feed.batches(signals, plan), strict=True):
            reference, mask = prepare_batch([signals[i] for i in indices], host_bundle)
            assert batch.indices == indices
            assert batch.padded == (len({LENGTHS[i] for i in indices}) > 1)
            assert torch.equal(batch.lengths, mask.sum(1))
            torch.testing.assert_close(batch.values, reference, atol=2e-6, rtol=0)
            seen.append(batch.values.clone())
    assert len(seen) == 2 * len(plan)


@pytest.mark.parametrize("variant", [{}, dict(feat_extract_norm="group", do_stable_layer_norm=False)],
                         ids=["layer-norm", "group-norm"])
def test_fast_service_equals_the_previous_path(tmp_path, variant):
    model = str(create_random_encoder(tmp_path / "m", **variant))
    signals = clips(LENGTHS + (400,))
    fast = EmbedService(config=EmbedArgs(device="cpu", batch_size=3).to_config(), model=model)
    previous = EmbedService(config=EmbedArgs(device="cpu", batch_size=3, fast=False).to_config(), model=model)
    assert fast.fast is not None and fast.fast.fallback is None and previous.fast is None
    np.testing.assert_allclose(fast.process_batch(signals), previous.process_batch(signals), atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.process_batch(signals, layers=[1]), previous.process_batch(signals)[:, [1]],
                               atol=1e-5, rtol=0)


def test_feed_is_free_again_after_an_abandoned_pass():
    signals = clips()
    plan = [[0, 1], [2, 3], [4]]
    feed = Feed(device="cpu", do_normalize=True, overlap=True)
    with contextlib.closing(feed.batches(signals, plan)) as batches:
        next(batches)  # a forward that raised would leave the pass here
    assert [b.indices for b in feed.batches(signals, plan)] == plan


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("do_normalize", [False, True])
def test_cuda_feed_with_pinned_buffers_and_overlap_equals_the_host_path(bundle, do_normalize):
    signals = clips(LENGTHS * 3)
    plan = [[0, 3, 5], [1, 4], [2], [6, 7, 8, 9], [10, 11, 12, 13, 14]]
    host_bundle = bundle.__class__(**{**bundle.__dict__, "do_normalize": do_normalize})
    feed = Feed(device="cuda", do_normalize=do_normalize)
    assert feed.overlap
    for _ in range(2):  # the second pass reuses the pinned buffers
        for indices, batch in zip(plan, feed.batches(signals, plan), strict=True):
            reference, mask = prepare_batch([signals[i] for i in indices], host_bundle)
            assert batch.values.is_cuda and batch.lengths.is_cuda
            assert torch.equal(batch.lengths.cpu(), mask.sum(1))
            torch.testing.assert_close(batch.values.cpu(), reference, atol=2e-6, rtol=0)


@pytest.mark.gpu
@requires_cuda
def test_cuda_fast_service_equals_the_previous_path_and_the_cpu(tmp_path):
    model = str(create_random_encoder(tmp_path / "m"))
    signals = clips(LENGTHS * 2)
    on_cpu = EmbedService(config=EmbedArgs(device="cpu").to_config(), model=model).process_batch(signals)
    for args in (dict(), dict(fast=False), dict(compile_layers=True)):
        service = EmbedService(config=EmbedArgs(device="cuda", batch_size=4, **args).to_config(), model=model)
        np.testing.assert_allclose(service.process_batch(signals), on_cpu, atol=1e-4, rtol=0, err_msg=str(args))
