"""The laptop-GPU promise, checked in a few minutes: training fits in 1 GiB, its speed, and re-plan latency.

    python -m benchmarks.gpu_check [--steps 200] [--device cuda]      # benchmarks/gpu_check.sh sets up first

For the reach and PushT configs and every head: ``--steps`` training steps (bf16 autocast, AdamW) on
synthetic batches of the config's shapes and batch size, then peak ``torch.cuda.max_memory_allocated``
against the 1 GiB budget, steady-state samples/s, and ``select_action`` re-plan latency at batch 1
(p50 / p95) against the env's control period. No dataset or hub model is needed: the text encoder
is a tiny random DistilBERT (frozen, run once per instruction, so it changes none of these numbers).

``--vlm DIR`` adds rows for the vision-language backbone (``configs/pusht_vlm.yaml`` with the model in
DIR, e.g. a random SmolVLM2-256M-shaped one from ``python -m policy.tiny_vlm DIR --size 256M``): full
fine-tuning, and LoRA 16 with the vision tower frozen, with and without gradient checkpointing.
"""

import argparse
import tempfile
import time

import numpy as np
import torch

from action_head import HEADS
from core.device import autocast_for, device_name
from core.errors import ArgumentParser, UserError, positive_int, run_main
from core.keys import OBS_IMAGE, OBS_STATE, TASK
from data.synthetic import synthetic_batch, unit_normalizer_stats
from encoders.tiny_text import save_tiny_text_model
from envs import benchmark
from experiment.config import load_config
from experiment.optim import make_optimizer
from policy.backbones import build_policy

CONFIGS = ("configs/metaworld_reach.yaml", "configs/pusht.yaml")
VLM_CONFIG = "configs/pusht_vlm.yaml"
VLM_SETTINGS = {
    "vlm full": [],
    "vlm LoRA16 frozen-vision": ["vlm.lora_rank=16", "vlm.freeze_vision=true"],
    "vlm LoRA16 frozen-vision ckpt": ["vlm.lora_rank=16", "vlm.freeze_vision=true", "vlm.gradient_checkpointing=true"],
}
BUDGET_BYTES = 2**30


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check(config_path: str, label: str, overrides: list[str], device: torch.device, steps: int,
          plans: int = 20, compile: bool = False) -> dict:
    config = load_config(config_path, overrides)
    features = config.features
    torch.manual_seed(0)
    policy = build_policy(config.model, features)
    policy.normalizer.fit(unit_normalizer_stats(features))
    policy.to(device).train()
    optimizer = make_optimizer([p for p in policy.parameters() if p.requires_grad], config.train)
    batch = synthetic_batch(features, config.policy.n_obs_steps, config.policy.chunk_size, config.train.batch_size,
                            device)
    autocast = autocast_for(config.train.precision, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    warmup = min(10, steps // 2)
    for step in range(steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        with autocast:
            loss, _ = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    samples_per_s = (steps - warmup) * config.train.batch_size / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")

    policy = policy.for_inference()  # as evaluate.py runs it (the VLM merges LoRA adapters)
    one = synthetic_batch(features, config.policy.n_obs_steps, config.policy.chunk_size, 1, device)
    obs = {OBS_STATE: one[OBS_STATE][:, 0], TASK: one[TASK]}
    if features.has_images:
        obs[OBS_IMAGE] = one[OBS_IMAGE][:, 0]
    p50, p95 = replan_ms(policy, obs, device, autocast, plans)
    compiled = (float("nan"), float("nan"))
    if compile and config.backbone.type == "modular":
        torch._dynamo.reset()  # each row compiles afresh: past dynamo's recompile limit a row would run eager
        compiled = replan_ms(policy.compile_for_inference(), obs, device, autocast, plans)  # warm-up compiles
    fits = "-" if device.type != "cuda" else ("yes" if peak <= BUDGET_BYTES else "NO")
    return {"config": config_path, "head": label, "batch": config.train.batch_size, "samples_per_s": samples_per_s,
            "peak_mib": peak / 2**20, "fits": fits, "plan_p50": p50, "plan_p95": p95,
            "compiled_p50": compiled[0], "compiled_p95": compiled[1],
            "period_ms": 1000 / benchmark(config.env.name).fps}


def replan_ms(policy, obs: dict, device: torch.device, autocast, plans: int) -> tuple[float, float]:
    """p50 and p95 ms of a ``select_action`` that re-plans, after 5 warm-up calls."""
    timings = []
    for call in range(plans + 5):  # the first 5 warm up
        policy.reset()
        sync(device)
        start = time.perf_counter()
        with autocast:
            policy.select_action(obs)  # an empty queue: this call re-plans
        sync(device)
        if call >= 5:
            timings.append(time.perf_counter() - start)
    return float(np.percentile(timings, 50)) * 1e3, float(np.percentile(timings, 95)) * 1e3


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=200, help="training steps per config and head")
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (cpu: a smoke run, no memory numbers)")
    parser.add_argument("--heads", nargs="+", default=HEADS.names(), choices=HEADS.names())
    parser.add_argument("--compile", action="store_true",
                        help="also time the modular backbone's re-plans after compile_for_inference (evaluate.py "
                             "--compile; each compile takes a minute or so)")
    parser.add_argument("--vlm", metavar="DIR", help="also measure the vision-language backbone with the model in DIR")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device here; run on a GPU machine, or --device cpu for a smoke run")
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.steps} steps per row, "
          "bf16 where the config says")
    compiled_column = " compiled re-plan p50 / p95 (ms) |" if args.compile else ""
    print("| config | head | batch | samples/s | peak memory (MiB) | fits 1 GiB | re-plan p50 / p95 (ms) |"
          f"{compiled_column} control period (ms) |")
    print("|---" * (9 if args.compile else 8) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        text_model = save_tiny_text_model(tmp)
        rows = [(path, head, [f"text.model_name={text_model}", f"action_head.type={head}"])
                for path in CONFIGS for head in args.heads]
        if args.vlm:
            rows += [(VLM_CONFIG, label, [f"vlm.model_name={args.vlm}", *extra])
                     for label, extra in VLM_SETTINGS.items()]
        for config_path, label, overrides in rows:
            r = check(config_path, label, overrides, device, args.steps, compile=args.compile)
            compiled = f" {r['compiled_p50']:.1f} / {r['compiled_p95']:.1f} |" if args.compile else ""
            print(f"| {r['config']} | {r['head']} | {r['batch']} | {r['samples_per_s']:.0f} | "
                  f"{r['peak_mib']:.0f} | {r['fits']} | {r['plan_p50']:.1f} / "
                  f"{r['plan_p95']:.1f} |{compiled} {r['period_ms']:.1f} |", flush=True)


if __name__ == "__main__":
    run_main(main)
