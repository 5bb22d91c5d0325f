"""Per-class F1 against scikit-learn; the speaker jackknife covers the truth at its level."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from serlens.probe.uncertainty import confusion_counts, f1_from_confusion, speaker_jackknife


def test_confusion_and_per_class_f1_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 300)
    predicted = np.where(rng.random((3, 300)) < 0.6, truth, rng.integers(0, 5, (3, 300)))
    counts = confusion_counts(predicted, truth, 5)
    for s in range(3):
        np.testing.assert_array_equal(counts[s], confusion_matrix(truth, predicted[s], labels=range(5)))
        np.testing.assert_allclose(
            f1_from_confusion(counts[s]), f1_score(truth, predicted[s], average=None, labels=range(5))
        )


def test_jackknife_interval_covers_the_population_value() -> None:
    # Speakers differ in how well they are recognised: clips within a speaker are correlated,
    # so the population macro-F1 must be covered about 95 % of the time over speaker samples.
    rng = np.random.default_rng(1)
    population_speakers = 4000
    skill = np.clip(rng.normal(0.55, 0.2, population_speakers), 0.0, 1.0)
    clips_per_speaker = 14

    def sample(speaker_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        speakers = np.repeat(speaker_ids, clips_per_speaker)
        truth = rng.integers(0, 6, len(speakers))
        right = rng.random(len(speakers)) < skill[speakers]
        predicted = np.where(right, truth, (truth + rng.integers(1, 6, len(speakers))) % 6)
        return predicted, truth, speakers

    everyone = sample(np.arange(population_speakers))
    target = f1_from_confusion(confusion_counts(everyone[0], everyone[1], 6)).mean()
    covered, widths = 0, []
    trials = 300
    for _ in range(trials):
        predicted, truth, speakers = sample(rng.choice(population_speakers, 40, replace=False))
        interval = speaker_jackknife(predicted[None], truth, speakers, 6)
        covered += int(interval.low <= target <= interval.high)
        widths.append(float(interval.high - interval.low))
    assert 0.9 <= covered / trials <= 0.99
    # Wider than a clip-level binomial interval would be (speaker correlation counts).
    assert np.mean(widths) > 2 * 1.96 * np.sqrt(0.55 * 0.45 / (40 * clips_per_speaker))
