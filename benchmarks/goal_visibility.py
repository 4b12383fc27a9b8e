"""How well each Meta-World camera sees the goal while the scripted expert reaches for it.

    python -m benchmarks.goal_visibility [--task reach-v3] [--image-size 96] [--episodes 12] [--marker]

For every camera, the goal's pixels (``MetaWorldEnv.goal_pixels``: those that change when the goal is
not drawn) every few steps of expert episodes on training layouts, split by the hand's distance to the
goal: far, and near (under ``--near`` metres), where a policy needs the goal most and the arm hides
it most. Prints the mean pixel count, the fraction of frames where the goal shows at all, and where it
shows with at least 3 pixels. Chooses cameras for the stock scene (``env.goal_marker: false``), where
the goal is a small site the colour of the arm.
"""

import argparse
import os

import numpy as np
from tqdm import tqdm

from core.errors import ArgumentParser, UserError, positive_int, run_main
from core.keys import OBS_STATE


def measure(task: str, image_size: int, episodes: int, marker: bool, near: float, every: int,
            steps: int) -> dict[str, dict[str, list[int]]]:
    """camera -> {"far": [pixels...], "near": [pixels...]} over expert frames."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from envs.metaworld import CAMERAS, MetaWorldEnv, layout_seed

    cameras = tuple(CAMERAS)
    env = MetaWorldEnv(task, cameras=(), image_size=(image_size, image_size), goal_marker=marker)
    pixels: dict[str, dict[str, list[int]]] = {c: {"far": [], "near": []} for c in cameras}
    try:
        for episode in tqdm(range(episodes), desc="expert episodes"):
            obs, _ = env.reset(seed=layout_seed("train", episode))
            for step in range(steps):
                if step % every == 0:
                    hand_to_goal = float(np.linalg.norm(obs[OBS_STATE][:3] - env.goal))  # proprio: hand xyz first
                    key = "near" if hand_to_goal < near else "far"
                    for camera, count in env.goal_pixels(cameras).items():
                        pixels[camera][key].append(count)
                obs, _, terminated, truncated, _ = env.step(env.expert_action())
                if terminated or truncated:
                    break
    finally:
        env.close()
    return pixels


def table(pixels: dict[str, dict[str, list[int]]]) -> str:
    lines = ["| camera | frames far / near | mean pixels far / near | goal shown near | >= 3 pixels near |",
             "|---|---|---|---|---|"]
    for camera, split in pixels.items():
        far, close = np.array(split["far"]), np.array(split["near"])

        def mean(v: np.ndarray) -> str:
            return f"{v.mean():.1f}" if v.size else "-"

        def share(v: np.ndarray) -> str:
            return f"{v.mean():.0%}" if v.size else "-"

        lines.append(f"| {camera} | {far.size} / {close.size} | {mean(far)} / {mean(close)} | "
                     f"{share(close > 0)} | {share(close >= 3)} |")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--image-size", type=positive_int, default=96, help="square images, pixels")
    parser.add_argument("--episodes", type=positive_int, default=12)
    parser.add_argument("--marker", action="store_true", help="measure the magenta goal marker instead")
    parser.add_argument("--near", type=float, default=0.1, help="hand-to-goal distance (m) counted as near")
    parser.add_argument("--every", type=positive_int, default=5, help="measure every this many steps")
    parser.add_argument("--steps", type=positive_int, default=150, help="expert steps per episode at most")
    args = parser.parse_args()
    from envs.metaworld import INSTRUCTIONS

    if args.task not in INSTRUCTIONS:
        raise UserError(f"--task {args.task!r} is not a Meta-World v3 task; e.g. reach-v3, push-v3, pick-place-v3")
    if not 0 < args.near < 1:
        raise UserError(f"--near {args.near} must be a distance in metres between 0 and 1")
    pixels = measure(args.task, args.image_size, args.episodes, args.marker, args.near, args.every, args.steps)
    scene = "goal marker" if args.marker else "stock scene"
    print(f"{args.task}, {scene}, {args.image_size}x{args.image_size}, {args.episodes} expert episodes, "
          f"near = hand within {args.near} m of the goal")
    print(table(pixels))


if __name__ == "__main__":
    run_main(main)
