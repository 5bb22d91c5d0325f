"""Claim: serlens' embedding and training paths on a GPU, against plain Hugging Face, same run.

Builds a randomly initialised encoder with WavLM-large's shapes (speed does not depend on the
weights), writes it with save_pretrained, and measures through serlens' own code:
- ``EmbedService.process_batch``: every hidden state, mean over valid frames, fp32 and bf16
  autocast, 3 s clips (as the baseline) and CREMA-D's real length distribution (padding-aware
  batching by length);
- ``TrainerService.fit``: seconds per optimizer step (batch 16, frozen CNN encoder, AdamW),
  bf16 autocast and fp32, from two fits of different lengths (their difference cancels loading,
  validation and checkpoint 0).
Then runs the baseline script (``--baseline``, default .devshared/hf_wavlm_baseline.py, a copy
of ../shared/bench/hf_wavlm_baseline.py) in the same run and reports the ratios. Without CUDA
(or with --tiny) it runs the baseline's tiny shapes on the CPU: a check of the script, not a
speed claim. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from serlens.embed.config import EmbedArgs
from serlens.embed.service import EmbedService
from serlens.shared.audio import write_wav
from serlens.shared.models import create_random_encoder
from serlens.shared.tracking import TrackingConfig
from serlens.trainer.config import TrainArgs
from serlens.trainer.service import TrainClip, TrainerService

LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
             conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
             num_buckets=320, max_bucket_distance=800, feat_extract_norm="layer", do_stable_layer_norm=True,
             conv_bias=False)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, conv_dim=(32,) * 7,
            num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, feat_extract_norm="layer",
            do_stable_layer_norm=True)
SR = 16_000


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def crema_d_durations(path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    if path.exists():
        with open(path) as fh:
            durations = np.array([float(r["duration_s"]) for r in csv.DictReader(fh)])
        return rng.choice(durations, size=n)
    return rng.uniform(1.27, 5.0, size=n)  # CREMA-D's range, when its clip list is not at hand


def bench_embed(model: Path, *, tiny: bool, durations_csv: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    fixed = [rng.standard_normal(int(3 * SR)).astype(np.float32) * 0.1 for _ in range(8 if tiny else 256)]
    varied = [rng.standard_normal(int(d * SR)).astype(np.float32) * 0.1
              for d in crema_d_durations(durations_csv, 8 if tiny else 512, rng)]
    # Correctness on this device: a clip in a padded fp32 batch equals the clip alone.
    check = EmbedService(config=EmbedArgs(batch_size=8).to_config(), model=str(model))
    clips = [rng.standard_normal(int(d * SR)).astype(np.float32) * 0.1 for d in (1.3, 2.2, 3.1, 4.9)]
    batched = check.process_batch(clips)
    alone = np.stack([check.process_signal(c, SR) for c in clips])
    out.append({"case": "padding_invariance_fp32", "max_abs_diff": float(np.abs(batched - alone).max()),
                "tolerance": 1e-4, "holds": bool(np.abs(batched - alone).max() <= 1e-4)})
    print(json.dumps(out[-1]), flush=True)
    del check
    for precision in ("fp32", "bf16"):
        for batch in ([4] if tiny else [64, 128]):
            service = EmbedService(config=EmbedArgs(batch_size=batch, max_batch_audio_s=batch * 5.0 + 1,
                                                    precision=precision).to_config(), model=str(model))
            for name, signals in (("3s", fixed), ("crema-d-lengths", varied)):
                service.process_batch(signals[:batch])  # warm-up (kernels, allocator)
                sync()
                started = time.perf_counter()
                pooled = service.process_batch(signals)
                sync()
                seconds = time.perf_counter() - started
                audio_s = sum(len(s) for s in signals) / SR
                peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
                out.append({"case": "serlens_embed", "precision": precision, "batch": batch, "clips": name,
                            "audio_s_per_s": round(audio_s / seconds, 1), "layers": pooled.shape[1],
                            "peak_GiB": peak and round(peak, 2)})
                print(json.dumps(out[-1]), flush=True)
            del service
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
    return out


def bench_train(model: Path, workdir: Path, *, tiny: bool) -> list[dict]:
    rng = np.random.default_rng(1)
    clips = []
    for i in range(64 if tiny else 16 * 12):
        path = workdir / "clips" / f"c{i}.wav"
        write_wav(path, (rng.standard_normal(3 * SR) * 0.1).astype(np.float32), SR)
        clips.append(TrainClip(clip_id=f"c{i}", path=str(path), label=["a", "b", "c"][i % 3]))
    # A file store: the GPU machine may lack MLflow's database extras; the step time is the same.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking = TrackingConfig(tracking_uri=(workdir / "mlruns").as_uri(), artifact_location=None,
                              experiment="bench-gpu")
    out = []
    short, long = (2, 6) if tiny else (4, 40)
    for precision in ("bf16", "fp32"):
        if precision == "bf16" and not torch.cuda.is_available():
            continue
        seconds = {}
        for steps in (short, long):
            config = TrainArgs(batch_size=16 if not tiny else 2, grad_accum_steps=1, max_steps=steps,
                               eval_every_steps=10_000, checkpoint_every_steps=10_000, precision=precision,
                               log_checkpoints_to_mlflow=False, early_stopping_patience=10_000,
                               num_loader_workers=0 if tiny else 4).to_config()
            started = time.perf_counter()
            TrainerService(config=config, tracking=tracking).fit(
                model=str(model), train=clips, validation=clips[:16], labels=["a", "b", "c"],
                output_dir=workdir / f"ck-{precision}-{steps}", train_key=f"bench-{precision}-{steps}",
                resume=False, progress=False)
            seconds[steps] = time.perf_counter() - started
        per_step = (seconds[long] - seconds[short]) / (long - short)
        batch = 16 if not tiny else 2
        out.append({"case": "serlens_train", "precision": precision, "batch": batch,
                    "sec_per_step": round(per_step, 4), "audio_s_per_s": round(batch * 3 / per_step, 1),
                    "fit_overhead_s": round(seconds[short] - short * per_step, 1)})
        print(json.dumps(out[-1]), flush=True)
    return out


def run_baseline(script: Path, *, tiny: bool) -> list[dict]:
    if not script.exists():
        print(f"baseline script {script} not found: copy ../shared/bench/hf_wavlm_baseline.py there", flush=True)
        return []
    env = {**os.environ, "TINY": "1" if tiny else "0"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print(json.dumps({"baseline": row}), flush=True)
    if proc.returncode:
        print(proc.stderr[-2000:], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="the baseline's tiny shapes on the CPU")
    parser.add_argument("--baseline", type=Path, default=Path(".devshared/hf_wavlm_baseline.py"))
    parser.add_argument("--durations", type=Path, default=Path(".devshared/clips.csv"))
    args = parser.parse_args()
    tiny = args.tiny or not torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not tiny else "cpu"
    print(json.dumps({"torch": torch.__version__, "device": device, "tiny": tiny}), flush=True)
    with tempfile.TemporaryDirectory(prefix="serlens-bench-gpu-") as tmp:
        work = Path(tmp)
        model = create_random_encoder(work / "model", seed=0, **(TINY if tiny else LARGE))
        if tiny:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        embed = bench_embed(model, tiny=tiny, durations_csv=args.durations)
        train = bench_train(model, work, tiny=tiny)
    baseline = run_baseline(args.baseline, tiny=tiny)

    def base(case: str, dtype: str, batch: int) -> dict | None:
        return next((b for b in baseline if b.get("case") == case and b.get("dtype") == dtype
                     and b.get("batch") == batch and "error" not in b), None)

    ratios = {}
    for e in embed:
        if e["case"] != "serlens_embed":
            continue
        b = base("infer", e["precision"], e["batch"])
        if b and e["clips"] == "3s":
            ratios[f"embed_{e['precision']}_b{e['batch']}"] = round(e["audio_s_per_s"] / b["audio_s_per_s"], 3)
    for t in train:
        b = base("train", t["precision"], t["batch"])
        if b:
            ratios[f"train_{t['precision']}_b{t['batch']}"] = round(b["sec_per_step"] / t["sec_per_step"], 3)
    print(json.dumps({"benchmark": "gpu_paths", "device": device, "tiny": tiny, "serlens_embed": embed,
                      "serlens_train": train, "baseline": baseline,
                      "ratio_serlens_over_baseline": ratios}))


if __name__ == "__main__":
    main()
