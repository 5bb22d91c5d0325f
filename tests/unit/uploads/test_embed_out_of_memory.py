"""An out-of-memory error in the encoder fails only the request that caused it.

A real tiny WavLM in a child process whose address space is capped, so that a 300 s clip
really runs torch's CPU allocator out of memory while 1 s clips fit; the batch holding all
three is retried clip by clip by ``embed_batch_or_each``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from serlens.shared.models import create_random_encoder

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from serlens.embed import EmbedArgs, EmbedService
    from serlens.embed.app import embed_batch_or_each

    service = EmbedService(config=EmbedArgs(device="cpu").to_config(), model=sys.argv[1])
    rng = np.random.default_rng(0)
    short = [(0.1 * rng.standard_normal(16_000)).astype(np.float32) for _ in range(2)]
    service.process_signal(short[0], 16_000)  # warm up before the cap
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + 1536 * 2**20, vm + 1536 * 2**20))
    long = (0.1 * rng.standard_normal(300 * 16_000)).astype(np.float32)
    results = embed_batch_or_each(service, [short[0], long, short[1]], 16_000)
    alone = [service.process_signal(s, 16_000) for s in short]
    print(json.dumps({
        "kinds": [type(r).__name__ for r in results],
        "status": [getattr(r, "http_status", 200) for r in results],
        "same_as_alone": [bool(np.allclose(results[i], alone[j], atol=1e-5)) for i, j in ((0, 0), (2, 1))],
    }))
    """
)


@pytest.mark.slow  # a subprocess loads torch and the encoder
def test_only_the_clip_that_runs_out_of_memory_fails(tmp_path):
    model = create_random_encoder(tmp_path / "tiny")
    done = subprocess.run([sys.executable, "-c", CHILD, str(model)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["kinds"] == ["ndarray", "ModelOutOfMemoryError", "ndarray"], report
    assert report["status"] == [200, 503, 200] and report["same_as_alone"] == [True, True]
