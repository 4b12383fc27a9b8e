"""How much of this CPU's matmul peak the model's own convolution and linear layers reach in training.

    python -m benchmarks.kernels --config configs/metaworld_reach.yaml [--precision bf16] [--top 12]

One training forward at the config's batch size records every ``Conv1d``, ``Conv2d`` and ``Linear``
call (its input's shape, dtype and memory layout). Each distinct layer is then timed alone, as it runs
in training: its forward, and forward plus backward (the weights' gradients, and the input's where
training computes it: not for the images), under the training precision's autocast, with FLOPs
counted by ``torch.utils.flop_counter``. The report gives
GFLOP/s and the fraction of the matmul peak measured in the same run (``benchmarks.throughput``), per
layer and in total, and how much of a measured training step these layers take: what is left is
normalization, activations, copies, attention and the optimizer. Attention's projections run inside
torch's attention function, not as ``Linear`` calls, so they are not listed.
"""

import argparse
import time
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.throughput import build, matmul_peak, measure
from core.device import autocast_for, cpu_description, resolve_precision
from core.errors import ArgumentParser, positive_int, run_main
from experiment.config import Config, load_config

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerCall:
    name: str  # the first module that made this call
    module: nn.Module
    shape: tuple[int, ...]
    dtype: torch.dtype
    channels_last: bool
    input_grad: bool  # whether training needs the input's gradient (not for the images)

    @property
    def key(self) -> tuple:  # calls that cost the same: one module type, weight shape, input
        m = self.module
        return (type(m), tuple(m.weight.shape), getattr(m, "stride", None), getattr(m, "padding", None),
                self.shape, self.dtype, self.channels_last, self.input_grad)


def record_calls(policy: nn.Module, batch: dict, precision: str) -> list[LayerCall]:
    """Every convolution and linear layer call of one training forward, in order."""
    calls, hooks = [], []
    for name, module in policy.named_modules():
        if isinstance(module, LAYERS):
            def hook(mod, inputs, _output, name=name):
                x = inputs[0]
                calls.append(LayerCall(name, mod, tuple(x.shape), x.dtype,
                                       x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last),
                                       x.requires_grad))
            hooks.append(module.register_forward_hook(hook))
    try:
        with autocast_for(precision, torch.device("cpu")):
            policy(batch)
    finally:
        for handle in hooks:
            handle.remove()
    return calls


def best_seconds(fn, repeats: int, min_seconds: float = 0.02) -> float:
    """The best time of one call of ``fn`` over ``repeats`` timings of enough calls to last ``min_seconds``."""
    fn()
    start = time.perf_counter()
    fn()
    inner = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


@dataclass
class LayerTiming:
    call: LayerCall
    count: int  # calls per training step
    forward_flops: float
    train_flops: float  # forward + backward
    forward_s: float
    train_s: float


def time_layer(call: LayerCall, count: int, precision: str, repeats: int) -> LayerTiming:
    x = torch.randn(call.shape, dtype=call.dtype)
    if call.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(call.input_grad)
    params = [p for p in call.module.parameters() if p.requires_grad]
    autocast = autocast_for(precision, torch.device("cpu"))

    def forward() -> torch.Tensor:  # with gradients on, as in training (the path a layer takes may differ)
        with autocast:
            return call.module(x)

    def train() -> None:
        with autocast:
            y = call.module(x)
        if y.requires_grad:  # not for a frozen layer on the images
            y.backward(torch.ones_like(y))
        for tensor in (x, *params):
            tensor.grad = None

    with FlopCounterMode(display=False) as counter:
        forward()
    forward_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        train()
    return LayerTiming(call, count, forward_flops, counter.get_total_flops(), best_seconds(forward, repeats),
                       best_seconds(train, repeats))


def kernel_report(config: Config, top: int, repeats: int = 5) -> str:
    precision = resolve_precision(config.train.precision, torch.device("cpu"))
    policy, _, batch = build(config)
    calls = record_calls(policy, batch, precision)
    counts = Counter(call.key for call in calls)
    first = {}
    for call in calls:
        first.setdefault(call.key, call)
    timings = [time_layer(call, counts[key], precision, repeats) for key, call in first.items()]
    step = measure(config, steps=repeats)
    step_s = config.train.batch_size / step.samples_per_s
    peak = matmul_peak(precision)

    def rate(flops: float, seconds: float) -> str:
        return f"{flops / seconds / 1e9:.0f} ({flops / seconds / peak:.0%})"

    timings.sort(key=lambda t: t.count * t.train_s, reverse=True)
    lines = [f"{config.train.batch_size} samples a step, {precision}, "
             f"{'channels-last' if config.train.channels_last else 'NCHW'}; matmul peak {peak / 1e9:.0f} GFLOP/s; "
             f"a measured training step {step_s * 1e3:.0f} ms ({step.samples_per_s:.1f} samples/s)", "",
             "| layer (first call) | calls a step | input | forward GFLOP/s (of peak) | forward + backward GFLOP/s "
             "(of peak) | ms a step |", "|---|---|---|---|---|---|"]
    for t in timings[:top]:
        shape = "x".join(map(str, t.call.shape))
        lines.append(f"| {t.call.name} ({type(t.call.module).__name__}) | {t.count} | {shape} | "
                     f"{rate(t.forward_flops, t.forward_s)} | {rate(t.train_flops, t.train_s)} | "
                     f"{t.count * t.train_s * 1e3:.1f} |")
    total_s = sum(t.count * t.train_s for t in timings)
    total_flops = sum(t.count * t.train_flops for t in timings)
    forward_s = sum(t.count * t.forward_s for t in timings)
    forward_flops = sum(t.count * t.forward_flops for t in timings)
    lines += ["", f"All {len(calls)} calls ({len(timings)} distinct layers): forward {rate(forward_flops, forward_s)} "
              f"GFLOP/s; forward + backward {rate(total_flops, total_s)} GFLOP/s, {total_s * 1e3:.0f} ms, "
              f"{total_s / step_s:.0%} of the measured step."]
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments()
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: the config's train.precision")
    parser.add_argument("--top", type=positive_int, default=12, help="layers listed, costliest first")
    args = parser.parse_args()
    overrides = [*args.set, f"train.precision={args.precision}"] if args.precision else args.set
    config = load_config(args.config, overrides)
    print(f"{args.config}, {torch.get_num_threads()} threads, {cpu_description()}")
    print(kernel_report(config, args.top), flush=True)


if __name__ == "__main__":
    run_main(main)
