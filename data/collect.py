"""Scripted-expert demonstrations for Meta-World, written episode by episode (resumable).

    python -m data.collect --config configs/metaworld_mt10.yaml [--episodes 100] [--set env.cameras=[corner]]
"""

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.configuration import apply_overrides, from_dict, load_yaml
from core.errors import ArgumentParser, UserError, positive_int, run_main
from core.keys import OBS_IMAGE, OBS_STATE
from core.lock import DirectoryLock
from data.config import DataConfig
from data.episode_store import EpisodeStore, EpisodeWriter
from data.provider import PROVIDERS, DatasetProvider
from envs import episode_seed, features_for, make_env
from envs.config import EnvConfig
from envs.metaworld import MetaWorld

MAX_TRIES_PER_EPISODE = 3  # the experts succeed on 95-100% of layouts; more failures mean something is wrong


def collect_metaworld(env_config: EnvConfig, episodes_per_task: int, root: Path, progress: bool = True
                      ) -> EpisodeStore:
    """Record successful expert episodes on ``train`` layouts until each task has enough; finalize.

    One collector per dataset root: a second one is refused while the first runs.
    """
    with DirectoryLock(root, "data collection"):
        return _collect(env_config, episodes_per_task, Path(root), progress)


def _collect(env_config: EnvConfig, episodes_per_task: int, root: Path, progress: bool) -> EpisodeStore:
    writer = EpisodeWriter(root, features_for(env_config), fps=MetaWorld.fps, source="Meta-World scripted experts")
    index = writer.episode_index()
    counts = Counter(e["env_task"] for e in index)
    recorded = {(e["env_task"], e["seed"]) for e in index}
    total = episodes_per_task * len(env_config.tasks)
    done = sum(min(counts[t], episodes_per_task) for t in env_config.tasks)
    bar = tqdm(total=total, initial=done, desc="collecting demonstrations", disable=not progress)
    for task in env_config.tasks:
        if counts[task] >= episodes_per_task:
            continue
        env = make_env(env_config, task)
        layout, failures = 0, 0
        while counts[task] < episodes_per_task:
            seed = episode_seed(env_config, "train", layout)
            layout += 1
            if (task, seed) in recorded:
                continue
            episode = _expert_episode(env, seed)
            if episode is None:
                failures += 1
                if failures > MAX_TRIES_PER_EPISODE * episodes_per_task:
                    raise RuntimeError(f"the scripted expert for {task} failed on {failures} layouts")
                continue
            writer.add_episode(**episode, task=env.instruction, seed=seed, env_task=task)
            counts[task] += 1
            bar.update(1)
        env.close()
    bar.close()
    return writer.finalize()


def _expert_episode(env, seed: int) -> dict | None:
    """One expert episode from ``seed``'s layout, or None if it did not succeed."""
    obs, _ = env.reset(seed=seed)
    states, actions, images, privileged = [], [], [], []
    success = False
    while True:
        action = env.expert_action().astype(np.float32)  # the env clips to [-1, 1]
        states.append(obs[OBS_STATE])
        privileged.append(env.privileged_state)
        if OBS_IMAGE in obs:
            images.append(obs[OBS_IMAGE])
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        success = success or bool(info["success"])
        if terminated or truncated:
            break
    if not success:
        return None
    return {"state": np.stack(states), "action": np.stack(actions), "images": np.stack(images) if images else None,
            "privileged": np.stack(privileged)}


@PROVIDERS.register("metaworld")
class MetaWorldExperts(DatasetProvider):
    """Scripted-expert episodes on ``train`` layouts, ``data.episodes_per_task`` per task (collected once)."""

    def provide(self, env: EnvConfig, data: DataConfig, root: Path, progress: bool) -> tuple[EpisodeStore, list[int]]:
        wanted = data.episodes_per_task
        try:
            store = EpisodeStore(root)
            counts = {t: sum(e["env_task"] == t for e in store.episodes) for t in env.tasks}
            if min(counts.values()) < wanted:
                raise FileNotFoundError
        except FileNotFoundError:
            store = collect_metaworld(env, wanted, root, progress)
        per_task: dict[str, list[int]] = {}
        for i, episode in enumerate(store.episodes):
            per_task.setdefault(episode["env_task"], []).append(i)
        return store, sorted(i for t in env.tasks for i in per_task[t][:wanted])


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments(set_help="overrides of the env and data sections, e.g. env.cameras=[corner]")
    parser.add_argument("--episodes", type=positive_int, default=None,
                        help="per task (default: data.episodes_per_task)")
    args = parser.parse_args()
    # Only the env and data sections matter here; train.py validates the whole config.
    raw = apply_overrides(load_yaml(args.config), args.set)
    env = from_dict(EnvConfig, raw.get("env", {}), "env")
    data = from_dict(DataConfig, raw.get("data", {}), "data")
    if env.name != MetaWorld.name:
        raise UserError("data.collect records Meta-World experts; PushT uses human data: python -m data.pusht_import")
    store = collect_metaworld(env, args.episodes or data.episodes_per_task, data.dataset_dir(env))
    print(f"{store.root}: {store.num_episodes} episodes, {store.num_frames} frames")


if __name__ == "__main__":
    run_main(main)
