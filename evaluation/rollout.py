"""Closed-loop rollouts: several envs stepped together, one batched policy call per step.

On a CPU the batch amortizes the encoders over envs, which beats one process per env when
there are only a couple of cores. With ``refill`` (the default) a slot whose episode ends starts
the next one at once, so a batch never waits for its slowest episode: 50 episodes cost about
their total steps / ``n_envs`` policy steps. Each episode samples from its own generator (seeded by
``sample_seed`` and its seed), so its result does not depend on which episodes share its batch, up
to the floating-point rounding of batched kernels, which can differ with the batch size.
"""

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.keys import OBS_IMAGE, OBS_STATE, TASK
from envs import benchmark, make_env
from envs.config import EnvConfig
from policy.base import Policy


def _to_batch(observations: list[dict], instruction: str, device: torch.device) -> dict:
    batch = {OBS_STATE: torch.from_numpy(np.stack([o[OBS_STATE] for o in observations])).to(device),
             TASK: [instruction] * len(observations)}
    if OBS_IMAGE in observations[0]:
        batch[OBS_IMAGE] = torch.from_numpy(np.stack([o[OBS_IMAGE] for o in observations])).to(device)
    return batch


def episode_generator(sample_seed: int, seed: int, device: torch.device) -> torch.Generator:
    """The sampling-noise generator of the episode on ``seed``."""
    return torch.Generator(device=device).manual_seed(sample_seed * 1_000_003 + seed)


@torch.no_grad()
def run_episodes(policy: Policy, env_config: EnvConfig, task: str, seeds: list[int], n_envs: int = 4,
                 video_episodes: int = 0, sample_seed: int = 0, progress: bool = True,
                 options: list[dict | None] | None = None, refill: bool = True
                 ) -> tuple[list[dict], list[np.ndarray]]:
    """Roll out ``policy`` once per seed (``options[i]``: episode i's ``reset`` options, if any).

    ``refill=False`` steps the envs in lockstep: a batch of ``n_envs`` episodes starts together and
    the next batch waits for its slowest episode (the same per-episode results, more steps).

    Returns:
        one dict per episode, in ``seeds`` order (seed, then the benchmark's ``episode_metrics``:
        success, steps and, for PushT, max/final coverage and max reward), and a (T, H, W, 3) uint8
        video for each of the first ``video_episodes`` episodes.
    """
    policy.eval()
    device = next(policy.parameters()).device
    spec = benchmark(env_config.name)
    options = options or [None] * len(seeds)
    envs = [make_env(env_config, task) for _ in range(min(n_envs, len(seeds)))]
    results: list[dict | None] = [None] * len(seeds)
    videos: dict[int, np.ndarray] = {}
    slot_episode: list[int | None] = [None] * len(envs)  # the episode each slot is playing
    observations: list[dict | None] = [None] * len(envs)
    generators = [episode_generator(sample_seed, 0, device) for _ in envs]
    infos: list[list[dict]] = [[] for _ in envs]
    frames: list[list[np.ndarray]] = [[] for _ in envs]
    upcoming = iter(range(len(seeds)))

    def start(slot: int) -> bool:
        """Begin the next episode in ``slot``; False when none is left."""
        episode = next(upcoming, None)
        slot_episode[slot] = episode
        if episode is None:
            return False
        env = envs[slot]
        observations[slot] = env.reset(seed=seeds[episode], options=options[episode])[0]
        generators[slot] = episode_generator(sample_seed, seeds[episode], device)
        infos[slot] = []
        frames[slot] = [env.render()] if episode < video_episodes else []
        return True

    bar = tqdm(total=len(seeds), desc=f"eval {task}", disable=not progress, leave=False)
    try:
        while True:
            if all(episode is None for episode in slot_episode):  # a new batch: every slot starts together
                if not any([start(slot) for slot in range(len(envs))]):
                    break
                policy.reset()
            # Finished slots (lockstep, or nothing left to play) keep their last observation; their
            # actions are dropped, and the batch keeps its shape so each row keeps its own queue.
            batch = _to_batch(observations, envs[0].instruction, device)
            actions = policy.select_action(batch, generators).float().cpu().numpy()
            restarted = []
            for slot, env in enumerate(envs):
                episode = slot_episode[slot]
                if episode is None:
                    continue
                observations[slot], _, terminated, truncated, info = env.step(actions[slot])
                infos[slot].append(info)
                if frames[slot]:
                    frames[slot].append(env.render())
                if not (terminated or truncated):
                    continue
                results[episode] = {"seed": seeds[episode], **spec.episode_metrics(infos[slot])}
                if frames[slot]:
                    videos[episode] = np.stack(frames[slot])
                bar.update(1)
                slot_episode[slot] = None
                if refill and start(slot):
                    restarted.append(slot)
            if restarted:
                policy.reset(restarted)
    finally:
        bar.close()
        for env in envs:
            env.close()
    return results, [videos[i] for i in sorted(videos)]


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
