"""Training-step time of one config under speed levers, in one process, interleaved, as ratios.

    python -m benchmarks.levers --config configs/metaworld_reach.yaml --set text.model_name=<dir>

Levers: ``channels_last`` (``train.channels_last=true``), ``no_fusion_dropout`` (``fusion.dropout=0``),
the two together, and ``compile`` (``torch.compile`` of the vision encoder, the fusion transformer and the head's
loss; its warm-up time is printed apart). Every variant is built first, then timed round-robin so
drift on a shared machine hits each alike; medians of ``--rounds``, ratio against ``eager``.
"""

import argparse
import statistics
import time

import torch

from benchmarks.memory import training_step
from benchmarks.throughput import build
from core.device import cpu_description
from core.errors import ArgumentParser, positive_int, run_main
from experiment.config import load_config

LEVERS = {"eager": [], "channels_last": ["train.channels_last=true"], "no_fusion_dropout": ["fusion.dropout=0"],
          "channels_last+no_fusion_dropout": ["train.channels_last=true", "fusion.dropout=0"], "compile": []}


def compile_policy(policy) -> None:
    policy.vision = torch.compile(policy.vision)
    policy.fusion = torch.compile(policy.fusion)
    policy.head.loss = torch.compile(policy.head.loss)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments()
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--rounds", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=3, help="timed steps per variant per round")
    args = parser.parse_args()
    levers = ["eager", *[lever for lever in args.levers if lever != "eager"]]
    built = {}
    for lever in levers:
        config = load_config(args.config, [*args.set, *LEVERS[lever]])
        policy, optimizer, batch = build(config)
        if lever == "compile":
            start = time.perf_counter()
            compile_policy(policy)
            training_step(policy, optimizer, batch, config.train.precision)
            print(f"compile warm-up: {time.perf_counter() - start:.0f} s", flush=True)
        for _ in range(2):
            training_step(policy, optimizer, batch, config.train.precision)
        built[lever] = (policy, optimizer, batch, config)
    times = {lever: [] for lever in levers}
    for _ in range(args.rounds):
        for lever, (policy, optimizer, batch, config) in built.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                training_step(policy, optimizer, batch, config.train.precision)
            times[lever].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times["eager"])
    print(f"{args.config}, {cpu_description()}, {torch.get_num_threads()} threads; medians of {args.rounds} rounds")
    print("| lever | ms / step | samples/s | ratio |\n|---|---|---|---|")
    for lever, samples in times.items():
        median = statistics.median(samples)
        batch_size = built[lever][3].train.batch_size
        print(f"| {lever} | {1000 * median:.0f} | {batch_size / median:.1f} | {base / median:.2f}x |")


if __name__ == "__main__":
    run_main(main)
