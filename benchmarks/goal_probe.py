"""Where a Meta-World policy believes the goal is, as its hand gets close: the ``policy.aux_state_weight``
head read as a probe, during the policy's own rollouts on held-out layouts.

    python -m benchmarks.goal_probe --checkpoint RUN_DIR [--episodes 10] [--steps 200] [--every 10]

For a checkpoint trained with the auxiliary state loss, the head's goal estimate (entries 36..38 of
Meta-World's observation) against the true goal, every few steps of the policy's own episodes on
``eval`` layouts, binned by the hand's distance to the goal. Prints the median and 90th percentile
error per bin, and how many episodes succeeded. A policy whose estimate holds far from the goal and
drifts near it loses the goal behind (or into) its own arm: what ``policy.first_frame`` addresses.
"""

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.errors import ArgumentParser, UserError, positive_int, run_main
from core.keys import OBS_IMAGE, OBS_PRIVILEGED, OBS_STATE, TASK

GOAL = slice(36, 39)  # the goal's entries of Meta-World's 39-number observation
BINS_CM = ((10.0, float("inf")), (5.0, 10.0), (0.0, 5.0))  # hand-to-goal distance, centimetres


def probe(checkpoint: str, episodes: int, steps: int, every: int) -> tuple[list[tuple[float, float]], int]:
    """[(hand-to-goal cm, goal estimate error cm)] over the rollouts, and the number of successes."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from envs.metaworld import MetaWorldEnv, layout_seed
    from policy.checkpoint import load_policy

    best = Path(checkpoint) / "checkpoints" / "best"  # a run directory, or a checkpoint folder itself
    policy = load_policy(best if best.is_dir() else checkpoint).eval()
    if getattr(policy, "aux_state", None) is None or policy.features.privileged_dim != 39:
        raise UserError(f"{checkpoint} has no Meta-World state head: train with policy.aux_state_weight > 0")
    features = policy.features
    env = MetaWorldEnv("reach-v3", features.cameras, features.image_size, max_episode_steps=steps,
                       goal_marker=False)
    samples, successes = [], 0
    try:
        for episode in tqdm(range(episodes), desc="probe episodes"):
            obs, _ = env.reset(seed=layout_seed("eval", episode))
            policy.reset()
            generator = torch.Generator().manual_seed(episode)
            for step in range(steps):
                batch = {OBS_IMAGE: torch.from_numpy(obs[OBS_IMAGE])[None],
                         OBS_STATE: torch.from_numpy(obs[OBS_STATE])[None], TASK: [env.instruction]}
                if step % every == 0:
                    samples.append((float(np.linalg.norm(obs[OBS_STATE][:3] - env.goal)) * 100,
                                    _goal_error_cm(policy, batch, env.goal)))
                action = policy.select_action(batch, generator)[0].numpy()
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    successes += bool(info["success"])
                    break
    finally:
        env.close()
    return samples, successes


@torch.no_grad()
def _goal_error_cm(policy, batch: dict, goal: np.ndarray) -> float:
    """The state head's goal estimate for this one observation, its distance to ``goal`` in cm."""
    obs = {OBS_IMAGE: batch[OBS_IMAGE][:, None], OBS_STATE: batch[OBS_STATE][:, None], TASK: batch[TASK]}
    if policy.config.policy.first_frame:
        obs["observation.first_image"] = policy._rows[0].first_image[None]  # noqa: SLF001 (kept by select_action)
    estimate = policy.normalizer.unnormalize(OBS_PRIVILEGED, policy.aux_state(policy.encode(obs).global_vector()))
    return float(np.linalg.norm(estimate[0, GOAL].numpy() - goal)) * 100


def table(samples: list[tuple[float, float]]) -> str:
    distance, error = np.array(samples).T if samples else (np.zeros(0), np.zeros(0))
    lines = ["| hand to goal | frames | goal estimate error, median / p90 (cm) |", "|---|---|---|"]
    for low, high in BINS_CM:
        chosen = error[(distance >= low) & (distance < high)]
        name = f">= {low:.0f} cm" if high == float("inf") else f"{low:.0f} to {high:.0f} cm"
        value = f"{np.median(chosen):.1f} / {np.quantile(chosen, 0.9):.1f}" if chosen.size else "-"
        lines.append(f"| {name} | {chosen.size} | {value} |")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint folder (reach-v3)")
    parser.add_argument("--episodes", type=positive_int, default=10)
    parser.add_argument("--steps", type=positive_int, default=200, help="policy steps per episode at most")
    parser.add_argument("--every", type=positive_int, default=10, help="probe every this many steps")
    args = parser.parse_args()
    samples, successes = probe(args.checkpoint, args.episodes, args.steps, args.every)
    print(f"reach-v3, stock scene, {args.episodes} eval layouts (seeds 2,000,000..), at most {args.steps} "
          f"steps: {successes} successes")
    print(table(samples))


if __name__ == "__main__":
    run_main(main)
