"""Closed-loop rollouts: several envs stepped in lockstep, one batched policy call per step.

On a CPU the batch amortizes the encoders over envs, which beats one process per env when
there are only a couple of cores.
"""

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.keys import OBS_IMAGE, OBS_STATE, TASK
from envs import benchmark, make_env
from envs.config import EnvConfig
from policy.vla_policy import VLAPolicy


def _to_batch(observations: list[dict], instruction: str, device: torch.device) -> dict:
    batch = {OBS_STATE: torch.from_numpy(np.stack([o[OBS_STATE] for o in observations])).to(device),
             TASK: [instruction] * len(observations)}
    if OBS_IMAGE in observations[0]:
        batch[OBS_IMAGE] = torch.from_numpy(np.stack([o[OBS_IMAGE] for o in observations])).to(device)
    return batch


@torch.no_grad()
def run_episodes(policy: VLAPolicy, env_config: EnvConfig, task: str, seeds: list[int], n_envs: int = 4,
                 video_episodes: int = 0, sample_seed: int = 0, progress: bool = True,
                 options: list[dict | None] | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """Roll out ``policy`` once per seed (``options[i]``: episode i's ``reset`` options, if any).

    Returns:
        one dict per episode (seed, then the benchmark's ``episode_metrics``: success, steps and, for
        PushT, max/final coverage and max reward), and a (T, H, W, 3) uint8 video for each of the
        first ``video_episodes`` episodes.
    """
    policy.eval()
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(sample_seed)
    spec = benchmark(env_config.name)
    envs = [make_env(env_config, task) for _ in range(min(n_envs, len(seeds)))]
    results, videos = [], []
    bar = tqdm(total=len(seeds), desc=f"eval {task}", disable=not progress, leave=False)
    try:
        for start in range(0, len(seeds), len(envs)):
            group = seeds[start:start + len(envs)]
            active_envs = envs[: len(group)]
            group_options = options[start:start + len(group)] if options else [None] * len(group)
            observations = [env.reset(seed=seed, options=opt)[0]
                            for env, seed, opt in zip(active_envs, group, group_options)]
            record = [start + i < video_episodes for i in range(len(group))]
            frames = [[env.render()] if rec else [] for env, rec in zip(active_envs, record)]
            done = [False] * len(group)
            info_log: list[list[dict]] = [[] for _ in group]
            policy.reset()
            while not all(done):
                actions = policy.select_action(_to_batch(observations, active_envs[0].instruction, device), generator)
                actions = actions.float().cpu().numpy()
                for i, env in enumerate(active_envs):
                    if done[i]:
                        continue  # finished envs idle; the batch keeps its shape so queues stay aligned
                    observations[i], _, terminated, truncated, info = env.step(actions[i])
                    info_log[i].append(info)
                    done[i] = terminated or truncated
                    if record[i]:
                        frames[i].append(env.render())
            for i, seed in enumerate(group):
                results.append({"seed": seed, **spec.episode_metrics(info_log[i])})
                if record[i]:
                    videos.append(np.stack(frames[i]))
            bar.update(len(group))
    finally:
        bar.close()
        for env in envs:
            env.close()
    return results, videos


def save_video(frames: np.ndarray, path: Path, fps: int) -> Path:
    """Write (T, H, W, 3) uint8 frames as mp4 (gif if no ffmpeg is available)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        imageio.mimsave(path.with_suffix(".mp4"), list(frames), fps=fps, macro_block_size=1)
        return path.with_suffix(".mp4")
    except (ImportError, ValueError, RuntimeError):
        imageio.mimsave(path.with_suffix(".gif"), list(frames), duration=1000 / fps)
        return path.with_suffix(".gif")
