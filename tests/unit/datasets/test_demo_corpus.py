import csv
import hashlib

import numpy as np
import opensmile
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from serlens.shared.datasets import scan_crema_d
from serlens.shared.demo_corpus import FIRST_ACTOR_ID, SENTENCES, write_demo_corpus
from serlens.shared.errors import InvalidConfigError
from serlens.shared.schema import EMOTIONS


def _digests(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory):
    return write_demo_corpus(tmp_path_factory.mktemp("demo"))


def test_same_seed_gives_byte_identical_files(tmp_path):
    first = _digests(
        write_demo_corpus(tmp_path / "a", num_speakers=2, sentences_per_emotion=1, seed=3)
    )
    second = _digests(
        write_demo_corpus(tmp_path / "b", num_speakers=2, sentences_per_emotion=1, seed=3)
    )
    other = _digests(
        write_demo_corpus(tmp_path / "c", num_speakers=2, sentences_per_emotion=1, seed=4)
    )
    assert len(first) == 2 * 6 + 2
    assert first == second
    wavs = [k for k in first if k.endswith(".wav")]
    assert all(first[k] != other[k] for k in wavs)


def test_layout_counts_and_gender_balance(default_corpus):
    wavs = sorted((default_corpus / "AudioWAV").glob("*.wav"))
    assert len(wavs) == 20 * 6 * 4
    with open(default_corpus / "VideoDemographics.csv", newline="") as fh:
        header = fh.readline().strip()
        rows = list(csv.DictReader(fh, fieldnames=["ActorID", "Age", "Sex", "Race", "Ethnicity"]))
    assert header == '"ActorID","Age","Sex","Race","Ethnicity"'
    assert [r["ActorID"] for r in rows] == [str(FIRST_ACTOR_ID + i) for i in range(20)]
    assert sum(r["Sex"] == "Female" for r in rows) == sum(r["Sex"] == "Male" for r in rows) == 10
    readme = (default_corpus / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "serlens" in readme and "CC0" in readme

    names = {w.stem for w in wavs}
    assert names == {
        f"{FIRST_ACTOR_ID + s}_{sen}_{emo}_XX"
        for s in range(20)
        for emo in EMOTIONS
        for sen in SENTENCES[:4]
    }
    peaks, durations = [], []
    for wav in wavs[::7]:
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        signal, _ = sf.read(str(wav))
        peaks.append(20 * np.log10(np.max(np.abs(signal))))
        durations.append(info.duration)
    assert 1.0 <= min(durations) and max(durations) <= 3.0
    assert max(peaks) < 0.0
    assert max(peaks) - min(peaks) > 10.0  # levels vary: normalisation has work to do

    scan = scan_crema_d(default_corpus, dataset="demo")
    assert scan.problems == ()
    assert len(scan.clips) == 480
    assert {c.gender for c in scan.clips} == {"F", "M"}


def test_rejects_impossible_sizes(tmp_path):
    with pytest.raises(InvalidConfigError, match="num_speakers"):
        write_demo_corpus(tmp_path, num_speakers=1)
    with pytest.raises(InvalidConfigError, match="sentences_per_emotion"):
        write_demo_corpus(tmp_path, sentences_per_emotion=13)


def test_egemaps_carries_speaker_independent_signal_about_emotion(tmp_path):
    folder = write_demo_corpus(tmp_path, num_speakers=8, sentences_per_emotion=2, seed=0)
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    features, labels, speakers = [], [], []
    for wav in sorted((folder / "AudioWAV").glob("*.wav")):
        actor, _, emotion, _ = wav.stem.split("_")
        signal, rate = sf.read(str(wav), dtype="float32")
        features.append(smile.process_signal(signal, rate).to_numpy()[0])
        labels.append(emotion)
        speakers.append(int(actor))
    x, y, groups = np.array(features), np.array(labels), np.array(speakers)
    assert x.shape == (96, 88) and np.all(np.isfinite(x))
    actors = sorted(set(speakers))
    scores = []
    for fold in range(
        4
    ):  # each fold tests on one female and one male speaker never seen in training
        test = np.isin(groups, actors[fold::4])
        scaler = StandardScaler().fit(x[~test])
        model = LogisticRegression(max_iter=2000).fit(scaler.transform(x[~test]), y[~test])
        scores.append(f1_score(y[test], model.predict(scaler.transform(x[test])), average="macro"))
    assert 0.45 < np.mean(scores) < 0.95, scores
