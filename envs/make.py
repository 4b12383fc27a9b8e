"""Build a benchmark env from the ``env`` config, and the seeds of each evaluation split.

Splits never share seeds: demonstrations (``train``), checkpoint selection (``val``) and the
reported numbers (``eval``) each come from their own layouts.
"""

import gymnasium as gym

from envs.config import EnvConfig

PUSHT_SPLIT_OFFSETS = {"eval": 1000, "val": 100_000, "train": 200_000}  # eval: seeds 1000.. as in BENCHMARKS.md


def make_env(config: EnvConfig, task: str) -> gym.Env:
    """One env for ``task`` with the configured cameras, image size, state variant and step cap."""
    if config.name == "metaworld":
        from envs.metaworld import MetaWorldEnv

        return MetaWorldEnv(task, tuple(config.cameras), tuple(config.image_size), config.state,
                            config.max_episode_steps)
    if config.name == "pusht":
        from envs.pusht import PushTEnv

        return PushTEnv(config.state, tuple(config.cameras), tuple(config.image_size), config.max_episode_steps)
    raise ValueError(f"unknown env '{config.name}'; known: metaworld, pusht")


def episode_seed(config: EnvConfig, split: str, index: int) -> int:
    """Seed of episode ``index`` of ``split`` (train | val | eval); disjoint across splits."""
    if config.name == "metaworld":
        from envs.metaworld import layout_seed

        return layout_seed(split, index)
    if split not in PUSHT_SPLIT_OFFSETS:
        raise ValueError(f"unknown split '{split}'; use train | val | eval")
    return PUSHT_SPLIT_OFFSETS[split] + index
