"""Generated clips and small settings for the trainer's tests: three tones, easy to tell apart."""

import numpy as np

from serlens.shared.audio import write_wav
from serlens.trainer.data import TrainClip

RATE = 16_000
LABELS = ("LOW", "MID", "HIGH")
FREQUENCY_HZ = {"LOW": 150.0, "MID": 450.0, "HIGH": 1400.0}
# 18 train clips, batch 4 -> 5 micro-batches (the last of 2 clips); 2 per step -> 3 steps per epoch,
# the last of one micro-batch. 8 steps cross two epoch boundaries; resuming at 4 lands mid-epoch.
SMALL = dict(
    batch_size=4,
    grad_accum_steps=2,
    lr=2e-3,
    eval_every_steps=2,
    checkpoint_every_steps=4,
    max_steps=8,
    device="cpu",
    seed=0,
)


def make_clips(folder, per_label, seed):
    rng = np.random.default_rng(seed)
    clips = []
    for label in LABELS:
        for i in range(per_label):
            n = int(rng.integers(8_000, 14_000))  # 0.5 to 0.9 s
            t = np.arange(n) / RATE
            tone = 0.4 * np.sin(
                2 * np.pi * FREQUENCY_HZ[label] * (1 + rng.uniform(-0.05, 0.05)) * t
            )
            signal = (tone + 0.02 * rng.standard_normal(n)).astype(np.float32)
            path = folder / f"{label}-{seed}-{i}.wav"
            write_wav(path, signal, RATE)
            clips.append(TrainClip(clip_id=path.stem, path=str(path), label=label))
    return clips
