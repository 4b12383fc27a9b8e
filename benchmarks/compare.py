"""Training throughput of two checkouts (or two settings) measured back to back, as a ratio.

    python -m benchmarks.compare --baseline ../easyvla-main --config configs/metaworld_reach.yaml
    python -m benchmarks.compare --config configs/pusht.yaml --baseline-set fusion.dropout=0.1

Speeds on a shared machine drift from minute to minute, and differ between machines, so a speed-up
is only meaningful against a baseline timed in the same run: each round runs
``python -m benchmarks.throughput`` in the baseline checkout and in this one (alternating which goes
first), and the report gives each side's median samples/s over the rounds and their ratio.
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from core.errors import ArgumentParser, UserError, positive_int, run_main

HERE = Path(__file__).resolve().parents[1]


def run_throughput(checkout: Path, config: str, overrides: list[str], heads: list[str], precision: str,
                   steps: int) -> dict[str, float]:
    """samples/s per head, read from the Markdown table ``benchmarks.throughput`` prints in ``checkout``."""
    command = [sys.executable, "-m", "benchmarks.throughput", "--config", config, "--heads", *heads,
               "--precisions", precision, "--steps", str(steps)]
    if overrides:
        command += ["--set", *overrides]
    out = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    if out.returncode != 0:
        raise UserError(f"benchmarks.throughput failed in {checkout}: {(out.stderr or out.stdout).strip()[-300:]}")
    rates = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in heads and cells[1] == precision:
            rates[cells[0]] = float(cells[3])
    missing = set(heads) - set(rates)
    if missing:
        raise UserError(f"no throughput row for {sorted(missing)} in {checkout}'s output")
    return rates


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments(set_help="overrides for both sides")
    parser.add_argument("--baseline", type=Path, default=HERE, help="the other checkout (default: this one)")
    parser.add_argument("--baseline-set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides for the baseline side only (compare two settings)")
    parser.add_argument("--heads", nargs="+", default=["diffusion", "flow", "autoregressive", "regression"])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=positive_int, default=6, help="timed steps per measurement")
    parser.add_argument("--rounds", type=positive_int, default=2, help="back-to-back rounds (medians reported)")
    args = parser.parse_args()
    if not (args.baseline / "benchmarks" / "throughput.py").is_file():
        raise UserError(f"--baseline {args.baseline} is not an EasyVLA checkout (no benchmarks/throughput.py)")
    sides = {"baseline": (args.baseline, [*args.set, *args.baseline_set]), "this": (HERE, args.set)}
    rates: dict[str, dict[str, list[float]]] = {side: {h: [] for h in args.heads} for side in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            checkout, overrides = sides[side]
            for head, rate in run_throughput(checkout, args.config, overrides, args.heads, args.precision,
                                             args.steps).items():
                rates[side][head].append(rate)
            print(f"round {round_ + 1}, {side}: done", file=sys.stderr, flush=True)
    print(f"{args.config}, {args.precision}; baseline {args.baseline} {' '.join(args.baseline_set)}; "
          f"medians of {args.rounds} rounds")
    print("| head | baseline samples/s | this samples/s | ratio |\n|---|---|---|---|")
    for head in args.heads:
        base, this = statistics.median(rates["baseline"][head]), statistics.median(rates["this"][head])
        print(f"| {head} | {base:.1f} | {this:.1f} | {this / base:.2f}x |")


if __name__ == "__main__":
    run_main(main)
