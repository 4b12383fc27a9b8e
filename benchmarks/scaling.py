"""How training cost grows: throughput and peak memory against batch size, cameras and chunk size.

    python -m benchmarks.scaling --config configs/metaworld_reach.yaml [--set ...]

One axis at a time around the config (the other settings stay as configured), at its precision.
"""

import argparse

from benchmarks import memory, throughput
from core.errors import ArgumentParser, run_main
from experiment.config import load_config

AXES = {
    "train.batch_size": ["16", "32", "64", "128"],
    "env.cameras": ["[corner]", "[corner,topview]", "[corner,topview,corner2]"],
    "policy.chunk_size": ["8", "16", "32"],
}


def scaling_table(config_path: str, overrides: list[str], axes: dict[str, list[str]] = AXES) -> str:
    lines = ["| setting | samples/s | GFLOP/sample | peak training memory (MiB) | trainable params |",
             "|---|---|---|---|---|"]
    for key, values in axes.items():
        for value in values:
            config = load_config(config_path, [*overrides, f"{key}={value}"])
            speed = throughput.measure(config, steps=4)
            report = memory.measure(config, device="cpu")
            lines.append(f"| {key}={value} | {speed.samples_per_s:.1f} | {speed.gflops_per_sample:.2f} | "
                         f"{report.peak_bytes / 2**20:.0f} | {report.trainable_params / 1e6:.2f}M |")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments()
    args = parser.parse_args()
    print(scaling_table(args.config, args.set))


if __name__ == "__main__":
    run_main(main)
