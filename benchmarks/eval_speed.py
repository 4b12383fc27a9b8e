"""Evaluation wall clock with slot refilling against lockstep batches, on a trained checkpoint.

    python -m benchmarks.eval_speed CHECKPOINT_DIR [--episodes 20] [--n-envs 5]

Runs the same episodes (the benchmark's evaluation seeds, the checkpoint's sampling seed) twice:
``refill=False``, where a batch of ``n_envs`` episodes waits for its slowest one, then ``refill=True``,
where a slot that finishes starts the next episode at once. Prints seconds per episode for each,
their ratio, and whether every episode's result is identical (it must be: each episode samples from
its own generator). The gain depends on the policy: it is largest when some episodes end early
(successes) and others run to the step limit (failures).
"""

import argparse
import time
from pathlib import Path

from core.errors import ArgumentParser, positive_int, run_main
from envs import episode_seed
from evaluation.rollout import run_episodes
from experiment.config import checkpoint_config
from policy.checkpoint import load_policy


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint directory (run/checkpoints/best)")
    parser.add_argument("--episodes", type=positive_int, default=20)
    parser.add_argument("--n-envs", type=positive_int, default=5)
    args = parser.parse_args()
    config = checkpoint_config(args.checkpoint)
    policy = load_policy(args.checkpoint).for_inference()
    task = config.env.tasks[0]
    seeds = [episode_seed(config.env, "eval", i) for i in range(args.episodes)]
    print(f"| {config.env.name} {task} | mode | seconds / episode | env steps | successes |")
    print("|---|---|---|---|---|")
    outcomes = {}
    for refill in (False, True):
        start = time.perf_counter()
        results, _ = run_episodes(policy, config.env, task, seeds, args.n_envs, sample_seed=config.seed,
                                  progress=False, refill=refill)
        seconds = time.perf_counter() - start
        outcomes[refill] = (results, seconds)
        name = "slot refilling" if refill else "lockstep"
        print(f"| {args.checkpoint} | {name} | {seconds / args.episodes:.2f} | {sum(r['steps'] for r in results)} | "
              f"{sum(r['success'] for r in results)}/{args.episodes} |")
    (lockstep, slow), (refilled, fast) = outcomes[False], outcomes[True]
    print(f"\nspeed-up {slow / fast:.2f}x; per-episode results identical: {lockstep == refilled}")


if __name__ == "__main__":
    run_main(main)
