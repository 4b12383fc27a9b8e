"""Training throughput (samples/s) and how much of this machine's matmul peak it uses.

    python -m benchmarks.throughput --config configs/metaworld_reach.yaml [--heads diffusion flow] [--profile]

For each head and precision: steady-state samples per second of a full training step (forward,
backward, AdamW) on synthetic data of the config's shapes; model FLOPs per sample counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; forward and
backward); and their product as a fraction of the matmul peak of the same dtype, measured in the
same run, robustly (the best over several GEMM shapes, the model's own among them, each warmed up
and repeated; once per process), since this machine is shared and noisy. Compare speeds only
within one run on one machine: ``python -m benchmarks.compare`` times two checkouts back to back.
"""

import argparse
import contextlib
import functools
import time
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from action_head import HEADS
from benchmarks.memory import training_step
from core.allocator import keep_freed_memory
from core.device import cpu_description, resolve_precision
from core.errors import ArgumentParser, positive_int, run_main
from core.keys import TASK
from data.synthetic import synthetic_batch, unit_normalizer_stats
from experiment.config import Config, head_overrides, load_config
from experiment.optim import make_optimizer
from policy.backbones import Policy, build_policy

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# GEMM shapes (M, K, N) to measure the peak on: large squares, and the model's own matmuls at
# batch 64 (fusion FFN on 64 x 36 tokens at width 256, attention projections, the head's MLP).
PEAK_SHAPES = ((2048, 2048, 2048), (1024, 1024, 1024), (2304, 256, 1024), (2304, 1024, 256), (2304, 256, 768),
               (64, 512, 512))


@functools.cache
def matmul_peak(precision: str, repeats: int = 7, shapes: tuple = PEAK_SHAPES) -> float:
    """The achievable matmul roof in ``precision`` on the current threads: the best FLOP/s over
    ``shapes`` (M, K, N), each warmed up and timed ``repeats`` times. Measured once per process."""
    best_rate = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k).to(DTYPES[precision]), torch.randn(k, n).to(DTYPES[precision])
        for _ in range(3):  # warm-up: kernels chosen, pages touched, clocks up
            torch.mm(a, b)
        inner = max(1, int(2e9 / (2 * m * k * n)))  # about 2 GFLOP per timing, so small shapes time well
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(inner):
                torch.mm(a, b)
            best_rate = max(best_rate, inner * 2 * m * k * n / (time.perf_counter() - start))
    return best_rate


def build(config: Config):
    keep_freed_memory()  # as train.py does
    torch.manual_seed(config.seed)
    features = config.features
    policy = build_policy(config.model, features)
    policy.normalizer.fit(unit_normalizer_stats(features))
    policy.train()
    if config.train.channels_last:
        policy.to(memory_format=torch.channels_last)
    optimizer = make_optimizer([p for p in policy.parameters() if p.requires_grad], config.train)
    batch = synthetic_batch(features, config.policy.n_obs_steps, config.policy.chunk_size, config.train.batch_size)
    policy.cache_instructions(batch[TASK])  # the frozen LM runs once per instruction, outside training steps
    return policy, optimizer, batch


def flops_per_sample(policy: Policy, batch: dict, precision: str) -> float:
    """Forward + backward FLOPs of one training step, divided by the batch size."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    # The math attention kernel: FlopCounterMode has no formula for the fused CPU one and would count 0.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        with autocast:
            loss, _ = policy(batch)
        loss.backward()
    policy.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch[TASK])


@dataclass
class Throughput:
    samples_per_s: float
    gflops_per_sample: float
    achieved_gflops: float
    peak_gflops: float

    @property
    def fraction_of_peak(self) -> float:
        return self.achieved_gflops / self.peak_gflops


def measure(config: Config, steps: int = 6, warmup: int = 2) -> Throughput:
    """Steady-state training throughput of ``config`` at its batch size and precision, on the CPU."""
    policy, optimizer, batch = build(config)
    precision = resolve_precision(config.train.precision, torch.device("cpu"))
    flops = flops_per_sample(policy, batch, precision)
    for _ in range(warmup):
        training_step(policy, optimizer, batch, precision)
    start = time.perf_counter()
    for _ in range(steps):
        training_step(policy, optimizer, batch, precision)
    samples_per_s = steps * config.train.batch_size / (time.perf_counter() - start)
    peak = matmul_peak(precision)
    return Throughput(samples_per_s, flops / 1e9, flops * samples_per_s / 1e9, peak / 1e9)


def profile_step(config: Config, rows: int = 12) -> str:
    """Where a training step's time goes: the top operators by their own CPU time."""
    from torch.profiler import ProfilerActivity, profile

    policy, optimizer, batch = build(config)
    for _ in range(2):
        training_step(policy, optimizer, batch, config.train.precision)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            training_step(policy, optimizer, batch, config.train.precision)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def throughput_table(config_path: str, overrides: list[str], heads: list[str], precisions: list[str],
                     steps: int) -> str:
    """Markdown: per head and precision, samples/s and the fraction of the matmul peak."""
    lines = ["| head | precision | batch | samples/s | GFLOP/sample | achieved GFLOP/s | matmul peak GFLOP/s | "
             "of peak |", "|---|---|---|---|---|---|---|---|"]
    for head, head_set in head_overrides(config_path, overrides, heads):
        for precision in precisions:
            config = load_config(config_path, [*head_set, f"train.precision={precision}"])
            r = measure(config, steps)
            lines.append(f"| {head} | {precision} | {config.train.batch_size} | {r.samples_per_s:.1f} | "
                         f"{r.gflops_per_sample:.2f} | {r.achieved_gflops:.1f} | {r.peak_gflops:.0f} | "
                         f"{r.fraction_of_peak:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments()
    parser.add_argument("--heads", nargs="+", default=HEADS.names())
    parser.add_argument("--precisions", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--steps", type=positive_int, default=6, help="timed training steps per measurement")
    parser.add_argument("--profile", action="store_true", help="also profile the first head in bf16")
    args = parser.parse_args()
    print(f"{args.config}, {torch.get_num_threads()} threads, {cpu_description()}")
    print(throughput_table(args.config, args.set, args.heads, args.precisions, args.steps), flush=True)
    if args.profile:
        config = load_config(args.config, [*args.set, f"action_head.type={args.heads[0]}", "train.precision=bf16"])
        print(f"\nprofile: {args.heads[0]}, bf16, batch {config.train.batch_size} (3 steps)\n{profile_step(config)}")


if __name__ == "__main__":
    run_main(main)
