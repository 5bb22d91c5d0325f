"""Claim: serlens' embedding and training paths on a GPU, against plain Hugging Face, same run.

Builds a randomly initialised encoder with WavLM-large's shapes (speed does not depend on the
weights), writes it with save_pretrained, and measures through serlens' own code:
- fidelity first: a clip in a padded fp32 batch equals the clip alone; and bf16 autocast through
  ``FastWavLM`` against Hugging Face fp32, per hidden state: relative L2 error no worse than 1.25x
  Hugging Face's own bf16 autocast error, cosine >= 0.9995;
- ``EmbedService.process_batch``: every hidden state, mean over valid frames, for the previous
  path (``fast=False``: Hugging Face forward, host-built masks), the fast path (``FastWavLM`` +
  ``serlens.embed.feed``) and the fast path with per-layer ``torch.compile``; fp32 and bf16
  autocast; 3 s clips and CREMA-D's real length mix (batches planned by a frame budget of
  ``batch`` x 3 s); plus plain Hugging Face at the same batch in this process;
- a profile (top operators and kernels) of the fastest embedding case, written to ``--profile``;
- ``TrainerService.fit``: seconds per optimizer step (batch 16, frozen CNN encoder, AdamW),
  bf16 autocast and fp32, from two fits of different lengths (their difference cancels loading,
  validation and checkpoint 0).
Then runs the baseline script (``--baseline``, default .devshared/hf_wavlm_baseline.py, a copy
of ../shared/bench/hf_wavlm_baseline.py) in the same run and reports the ratios. Without CUDA
(or with --tiny) it runs tiny shapes on the CPU (bf16 fidelity under CPU autocast, no compile
unless --compile): a check of the script, not a speed claim. The last line is one JSON object.
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
from serlens.shared.fast_wavlm import FastWavLM
from serlens.shared.models import create_random_encoder, load_encoder
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


def relative_errors(model: torch.nn.Module, fast: FastWavLM, values: torch.Tensor,
                    lengths: torch.Tensor, device: torch.device) -> dict:
    """Per hidden state: relative L2 error and cosine against Hugging Face fp32, on valid frames."""
    mask = (torch.arange(values.shape[1], device=device)[None] < lengths[:, None]).long()
    with torch.inference_mode():
        reference = model(values, attention_mask=mask, output_hidden_states=True).hidden_states
        with torch.autocast(device.type, dtype=torch.bfloat16):
            hf_bf16 = model(values, attention_mask=mask, output_hidden_states=True).hidden_states
            fast_bf16 = fast.hidden_states(values, lengths)
    frames = model._get_feat_extract_output_lengths(lengths)
    valid = torch.arange(reference[0].shape[1], device=device)[None] < frames[:, None]

    def error(a: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
        a, ref = a.float()[valid], ref.float()[valid]
        rel = float((a - ref).norm() / ref.norm())
        cos = float(torch.nn.functional.cosine_similarity(a.flatten(), ref.flatten(), dim=0))
        return rel, cos

    rows = [(error(h, r), error(f, r)) for r, h, f in zip(reference, hf_bf16, fast_bf16, strict=True)]
    hf_rel = [round(h[0], 6) for h, _ in rows]
    fast_rel = [round(f[0], 6) for _, f in rows]
    fast_cos = [round(f[1], 6) for _, f in rows]
    holds = all(f <= 1.25 * h + 1e-7 for f, h in zip(fast_rel, hf_rel, strict=True)) and min(fast_cos) >= 0.9995
    return {"case": "bf16_fidelity", "hf_bf16_rel_l2": hf_rel, "fast_bf16_rel_l2": fast_rel,
            "fast_bf16_cosine": fast_cos, "worst_ratio_fast_over_hf": round(max(
                f / max(h, 1e-12) for f, h in zip(fast_rel, hf_rel, strict=True)), 3),
            "rule": "fast rel L2 <= 1.25 x HF bf16 rel L2 per layer, cosine >= 0.9995", "holds": holds}


def fidelity(model_path: Path, device: torch.device, rng: np.random.Generator, tiny: bool) -> list[dict]:
    """Padding invariance of the service (fp32) and bf16 error of the fast forward."""
    out = []
    check = EmbedService(config=EmbedArgs(batch_size=8).to_config(), model=str(model_path))
    clips = [rng.standard_normal(int(d * SR)).astype(np.float32) * 0.1 for d in (1.3, 2.2, 3.1, 4.9)]
    batched = check.process_batch(clips)
    alone = np.stack([check.process_signal(c, SR) for c in clips])
    diff = float(np.abs(batched - alone).max())
    out.append({"case": "padding_invariance_fp32", "max_abs_diff": diff, "tolerance": 1e-4, "holds": diff <= 1e-4})
    lengths = torch.tensor([int(d * SR) for d in ((1.3, 3.0) if tiny else (1.3, 2.2, 3.0, 3.0, 4.1, 2.6, 1.9, 3.5))])
    values = torch.zeros(len(lengths), int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        values[i, :n] = torch.from_numpy(0.1 * rng.standard_normal(n).astype(np.float32))
    model = check.model
    out.append(relative_errors(model, FastWavLM(model), values.to(device), lengths.to(device), device))
    for row in out:
        print(json.dumps(row), flush=True)
    return out


def hf_embed_rate(model: torch.nn.Module, batch: int, precision: str, device: torch.device) -> dict:
    """Plain Hugging Face in this process: every hidden state, mean-pooled, 3 s clips, no mask."""
    x = torch.randn(batch, 3 * SR, device=device)

    def step() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            return torch.stack([h.float().mean(1) for h in model(x, output_hidden_states=True).hidden_states], 1)

    step()
    sync()
    started = time.perf_counter()
    for _ in range(3):
        step()
    sync()
    seconds = (time.perf_counter() - started) / 3
    return {"case": "hf_embed_same_process", "precision": precision, "batch": batch,
            "audio_s_per_s": round(batch * 3.0 / seconds, 1)}


def time_service(service: EmbedService, signals: list[np.ndarray], warm: int) -> float:
    """Audio seconds per second of ``process_batch`` over ``signals`` (after a warm-up)."""
    service.process_batch(signals[:warm])
    service.process_batch(signals[-warm:])  # both ends of the length mix: compile sees both
    sync()
    started = time.perf_counter()
    service.process_batch(signals)
    sync()
    return sum(len(s) for s in signals) / SR / (time.perf_counter() - started)


def bench_embed(model: Path, *, tiny: bool, durations_csv: Path, compile_layers: bool,
                profile_path: Path | None) -> list[dict]:
    rng = np.random.default_rng(0)
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    out = fidelity(model, device, rng, tiny)
    fixed = [rng.standard_normal(int(3 * SR)).astype(np.float32) * 0.1 for _ in range(8 if tiny else 512)]
    varied = [rng.standard_normal(int(d * SR)).astype(np.float32) * 0.1
              for d in crema_d_durations(durations_csv, 8 if tiny else 512, rng)]
    paths = [("hf", dict(fast=False)), ("fast", dict(fast=True))]
    if compile_layers:
        paths.append(("fast+compile", dict(fast=True, compile_layers=True)))
    best: tuple[float, EmbedService | None, list[np.ndarray]] = (0.0, None, fixed)
    for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        for batch in ([4] if tiny else [128]):
            args = dict(batch_size=None, max_batch_audio_s=batch * 3.0, precision=precision)
            for path, extra in paths:
                service = EmbedService(config=EmbedArgs(**args, **extra).to_config(), model=str(model))
                for name, signals in (("3s", fixed), ("crema-d-lengths", varied)):
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    rate = time_service(service, signals, warm=batch)
                    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
                    out.append({"case": "serlens_embed", "path": path, "precision": precision, "batch": batch,
                                "clips": name, "audio_s_per_s": round(rate, 1),
                                "layers": service.bundle.num_hidden_states, "peak_GiB": peak and round(peak, 2)})
                    print(json.dumps(out[-1]), flush=True)
                    if name == "3s" and rate > best[0]:
                        best = (rate, service, signals[: 2 * batch])
            hf_model = load_encoder(str(model), device=device)[0]
            out.append(hf_embed_rate(hf_model, batch, precision, device))
            print(json.dumps(out[-1]), flush=True)
            del hf_model
    if best[1] is not None:
        out.append(profile_embedding(best[1], best[2], profile_path))
    return out


def profile_embedding(service: EmbedService, signals: list[np.ndarray], path: Path | None) -> dict:
    """Top operators (and CUDA kernels) of one ``process_batch`` of the fastest case."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available() and service.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        service.process_batch(signals)
        sync()
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"fast={service.fast is not None} precision={service.config.precision} "
                        f"compile={service.config.compile_layers} clips={len(signals)}\n{table}\n")
    top = sorted(prof.key_averages(), key=lambda e: -getattr(e, "device_time_total" if cuda else "cpu_time_total"))
    return {"case": "profile_best_embedding", "saved_to": str(path) if path else None, "sorted_by": sort,
            "top": [{"name": e.key[:80], "ms": round(getattr(e, "device_time_total" if cuda else "cpu_time_total")
                                                   / 1e3, 2)} for e in top[:8]]}


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
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="also time the fast path with per-layer torch.compile (auto: on CUDA only)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="where to write the profile of the fastest embedding case "
                             "(default: benchmarks/results/bench_gpu_profile.txt on a GPU, none in tiny mode)")
    parser.add_argument("--skip-train", action="store_true", help="embedding only")
    args = parser.parse_args()
    tiny = args.tiny or not torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not tiny else "cpu"
    print(json.dumps({"torch": torch.__version__, "device": device, "tiny": tiny}), flush=True)
    with tempfile.TemporaryDirectory(prefix="serlens-bench-gpu-") as tmp:
        work = Path(tmp)
        model = create_random_encoder(work / "model", seed=0, **(TINY if tiny else LARGE))
        if tiny:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        compile_layers = args.compile == "on" or (args.compile == "auto" and not tiny)
        profile_path = args.profile or (None if tiny else Path("benchmarks/results/bench_gpu_profile.txt"))
        embed = bench_embed(model, tiny=tiny, durations_csv=args.durations, compile_layers=compile_layers,
                            profile_path=profile_path)
        train = [] if args.skip_train else bench_train(model, work, tiny=tiny)
    baseline = run_baseline(args.baseline, tiny=tiny)

    def base(case: str, dtype: str, batch: int) -> dict | None:
        return next((b for b in baseline if b.get("case") == case and b.get("dtype") == dtype
                     and b.get("batch") == batch and "error" not in b), None)

    ratios, targets = embed_ratios(embed, baseline, tiny=tiny)
    for t in train:
        b = base("train", t["precision"], t["batch"])
        if b:
            ratios[f"train_{t['precision']}_b{t['batch']}"] = round(b["sec_per_step"] / t["sec_per_step"], 3)
    gpus = 0 if tiny else 1
    print(json.dumps({"benchmark": "gpu_paths", "device": device, "tiny": tiny,
                      "cores_serlens": os.cpu_count(), "cores_baseline": os.cpu_count(),
                      "gpus_serlens": gpus, "gpus_baseline": gpus, "serlens_embed": embed,
                      "serlens_train": train, "baseline": baseline,
                      "ratio_serlens_over_baseline": ratios, "embed_targets": targets}))


def embed_ratios(embed: list[dict], baseline: list[dict], *, tiny: bool) -> tuple[dict, dict]:
    """Ratios of each embedding case to Hugging Face in this run, and the issue's targets."""
    rows = [e for e in embed if e["case"] == "serlens_embed"]
    hf_here = {(e["precision"], e["batch"]): e["audio_s_per_s"] for e in embed
               if e["case"] == "hf_embed_same_process"}
    script = [b for b in baseline if b.get("case") == "infer" and "error" not in b]
    ratios: dict[str, float] = {}
    for e in rows:
        name = f"embed_{e['path']}_{e['precision']}_b{e['batch']}_{e['clips']}"
        if (e["precision"], e["batch"]) in hf_here:
            ratios[f"{name}_over_hf_same_process"] = round(e["audio_s_per_s"] / hf_here[e["precision"], e["batch"]], 3)
        same = [b for b in script if b["dtype"] == e["precision"]]
        if same:
            top = max(same, key=lambda b: b["audio_s_per_s"])
            ratios[f"{name}_over_script_best_b{top['batch']}"] = round(e["audio_s_per_s"] / top["audio_s_per_s"], 3)
    mix = {}
    for e in rows:
        if e["clips"] == "crema-d-lengths":
            fixed = next(f for f in rows if f["clips"] == "3s" and all(
                f[k] == e[k] for k in ("path", "precision", "batch")))
            mix[f"{e['path']}_{e['precision']}_b{e['batch']}"] = round(e["audio_s_per_s"] / fixed["audio_s_per_s"], 3)
    best = max((e for e in rows if e["precision"] == "bf16" and e["clips"] == "3s"),
               key=lambda e: e["audio_s_per_s"], default=None)
    best_bf16 = best and best["audio_s_per_s"]
    hf_bf16 = max((v for (p, _), v in hf_here.items() if p == "bf16"), default=None)
    targets = {"measured": not tiny and best_bf16 is not None,
               "best_bf16_audio_s_per_s": best_bf16, "best_path": best and best["path"], "target_audio_s_per_s": 11_000,
               "over_hf_bf16_eager": best_bf16 and hf_bf16 and round(best_bf16 / hf_bf16, 2), "target_over_hf": 3.0,
               "crema_d_mix_over_3s": mix, "target_mix_over_3s": 0.85}
    if targets["measured"]:
        targets["holds"] = bool(best_bf16 >= 11_000 and targets["over_hf_bf16_eager"] >= 3.0
                                and mix[f"{best['path']}_bf16_b{best['batch']}"] >= 0.85)
    return ratios, targets


if __name__ == "__main__":
    main()
