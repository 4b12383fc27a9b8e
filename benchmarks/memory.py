"""Parameter counts and peak memory of one full training step, for a config.

    python -m benchmarks.memory --config configs/metaworld_reach.yaml [--set action_head.type=flow ...]

The peak covers parameters, gradients, optimizer state and activations of a steady-state step
(one warm-up step first, so AdamW's state exists). On CPU, a dispatch mode follows every live
tensor storage during the step (autograd's saved tensors and temporaries included); on CUDA,
``torch.cuda.max_memory_allocated``. The product promise: under 1 GiB at the config's batch size.
"""

import argparse
from dataclasses import dataclass

import torch

from benchmarks.live_memory import LiveStorageTracker
from core.device import autocast_for, resolve_device
from core.errors import ArgumentParser, run_main
from core.keys import TASK
from data.synthetic import synthetic_batch, unit_normalizer_stats
from envs.features import Features
from experiment.config import Config, head_overrides, load_config
from experiment.optim import accumulate_gradients, make_optimizer
from policy.backbones import Policy, build_policy

BUDGET_BYTES = 2**30


@dataclass
class MemoryReport:
    trainable_params: int
    frozen_params: int
    peak_bytes: int
    resident_bytes: int  # parameters, gradients, optimizer state and the batch, before the step (CPU only)
    language_model_bytes: int  # the frozen LM, kept on the CPU and outside the step (see encoders/text.py)
    device: str


def training_step(policy: Policy, optimizer: torch.optim.Optimizer, batch: dict, precision: str,
                  micro_batches: int = 1) -> None:
    autocast = autocast_for(precision, next(policy.parameters()).device)
    accumulate_gradients(policy, batch, autocast, micro_batches)  # as train.py does it
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)  # steady state keeps gradient buffers allocated


def measure(config: Config, features: Features | None = None, device: str | None = None) -> MemoryReport:
    """Peak memory of one training step at ``config.train.batch_size``."""
    features = features or config.features
    device = resolve_device(device or config.device)
    policy = build_policy(config.model, features)
    policy.normalizer.fit(unit_normalizer_stats(features))
    policy.to(device).train()
    if config.train.channels_last:
        policy.to(memory_format=torch.channels_last)
    counts = policy.parameter_counts()
    lm_bytes = policy.offloaded_bytes()
    optimizer = make_optimizer([p for p in policy.parameters() if p.requires_grad], config.train)
    batch = synthetic_batch(features, config.policy.n_obs_steps, config.policy.chunk_size, config.train.batch_size,
                            device)
    policy.cache_instructions(batch[TASK])  # the frozen LM runs once per instruction, outside training steps

    def step() -> None:
        training_step(policy, optimizer, batch, config.train.precision, config.train.micro_batches)

    step()  # warm-up: optimizer state exists
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize()
        return MemoryReport(counts["trainable"], counts["frozen"], torch.cuda.max_memory_allocated(device), 0,
                            lm_bytes, "cuda")
    tracker = LiveStorageTracker(device.type)
    tracker.track_all(policy, optimizer, batch)
    resident = tracker.current
    with tracker:
        step()
    return MemoryReport(counts["trainable"], counts["frozen"], tracker.peak, resident, lm_bytes, device.type)


def format_report(name: str, config: Config, report: MemoryReport) -> str:
    mib = report.peak_bytes / 2**20
    verdict = "OK" if report.peak_bytes < BUDGET_BYTES else "OVER the 1 GiB budget"
    return (f"{name}: {config.model_summary()} batch={config.train.batch_size} "
            f"precision={config.train.precision} | params trainable {report.trainable_params / 1e6:.2f}M, "
            f"frozen {report.frozen_params / 1e6:.2f}M | peak {mib:.1f} MiB on {report.device} ({verdict})"
            + (f", of which resident before the step {report.resident_bytes / 2**20:.1f} MiB"
               if report.resident_bytes else "")
            + f" | frozen language model on CPU, outside the step: {report.language_model_bytes / 2**20:.1f} MiB")


def memory_table(config_paths: list[str], overrides: list[str], heads: list[str]) -> str:
    """Markdown: parameters and peak training-step memory per config and head, against 1 GiB."""
    lines = ["| config | head | batch | precision | trainable params | peak training step (MiB) | "
             "under 1 GiB? | frozen LM, CPU, outside the step (MiB) |", "|---|---|---|---|---|---|---|---|"]
    for path in config_paths:
        for head, head_set in head_overrides(path, overrides, heads):
            config = load_config(path, head_set)
            r = measure(config, device="cpu")
            lines.append(f"| {path} | {head} | {config.train.batch_size} | {config.train.precision} | "
                         f"{r.trainable_params / 1e6:.2f}M | {r.peak_bytes / 2**20:.0f} | "
                         f"{'yes' if r.peak_bytes < BUDGET_BYTES else 'NO'} | {r.language_model_bytes / 2**20:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments(several=True)
    parser.add_argument("--device", default=None, help="override the config's device")
    args = parser.parse_args()
    over = False
    for path in args.config:
        config = load_config(path, args.set)
        report = measure(config, device=args.device)
        print(format_report(path, config, report), flush=True)
        over |= report.peak_bytes >= BUDGET_BYTES
    raise SystemExit(1 if over else 0)


if __name__ == "__main__":
    run_main(main)
