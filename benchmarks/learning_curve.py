"""Validation success against training steps and wall-clock time, read from a run's TensorBoard log.

    python -m benchmarks.learning_curve runs/metaworld_reach_20261122-101500 [--tag val/success_rate]
"""

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def learning_curve(run_dir: Path, tag: str = "val/success_rate") -> list[tuple[int, float, float]]:
    """(step, minutes since the first logged scalar, value) for each logged point of ``tag`` ([] if none)."""
    if not (run_dir / "tb").is_dir():  # a run folder deleted after its results were kept
        return []
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return []
    start = min(e.wall_time for t in events.Tags()["scalars"] for e in events.Scalars(t))
    return [(e.step, (e.wall_time - start) / 60, e.value) for e in events.Scalars(tag)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", default="val/success_rate")
    args = parser.parse_args()
    curve = learning_curve(args.run_dir, args.tag)
    if not curve:
        raise SystemExit(f"{args.run_dir}: no '{args.tag}' in the TensorBoard log")
    print(f"| step | minutes | {args.tag} |\n|---|---|---|")
    for step, minutes, value in curve:
        print(f"| {step} | {minutes:.1f} | {value:.2f} |")


if __name__ == "__main__":
    main()
