"""One description per benchmark: everything the rest of the code knows about it, in one place.

A benchmark (Meta-World, PushT, ...) is a ``Benchmark`` subclass registered under its
``env.name``; its file in ``envs/`` holds the env wrapper and this description. Its
demonstrations come from a dataset provider registered under the same name in ``data/provision.py``.

    benchmark("pusht").fps                 # 10: control rate (videos, datasets, latency budgets)
    make_env(config.env, "pusht")          # a gymnasium env with the project's observation dict
    episode_seed(config.env, "eval", 0)    # seeds of disjoint train | val | eval splits
"""

from abc import ABC, abstractmethod
from typing import ClassVar

import gymnasium as gym

from core.configuration import ConfigError
from core.registry import Registry
from envs.config import EnvConfig
from envs.features import Features

SPLITS = ("train", "val", "eval")


class Benchmark(ABC):
    """A benchmark's description; class attributes say what it has, methods build and score episodes."""

    name: ClassVar[str]
    fps: ClassVar[int]  # control steps per second
    tasks: ClassVar[tuple[str, ...]]
    cameras: ClassVar[tuple[str, ...]]
    state_sizes: ClassVar[dict[str, tuple[int, int]]]  # state variant -> (state_dim, action_dim)
    privileged_dim: ClassVar[int] = 0  # the simulator state its datasets record (training targets, never inputs)
    headline: ClassVar[str]  # the summary key that picks checkpoints and leads reports (higher is better)
    headline_name: ClassVar[str]  # what people call it: "success", "score"
    train_command: ClassVar[str]  # the command that trains a policy for it (for error messages)
    protocols: ClassVar[tuple[str, ...]] = ("seeds",)  # evaluation protocols; "seeds": the split's seeds

    @abstractmethod
    def make(self, config: EnvConfig, task: str) -> gym.Env:
        """One env for ``task`` with the configured cameras, image size, state variant and step cap."""

    @abstractmethod
    def episode_seed(self, split: str, index: int) -> int:
        """Seed of episode ``index`` of ``split`` (train | val | eval); splits never share seeds."""

    def episode_options(self, protocol: str, task: str, index: int) -> dict | None:
        """``reset`` options of evaluation episode ``index`` under ``protocol`` (None: the seed decides)."""
        return None

    def episode_metrics(self, infos: list[dict]) -> dict:
        """One episode's results from the infos its steps returned: success (at some step) and steps."""
        return {"success": any(bool(info.get("success", False)) for info in infos), "steps": len(infos)}


BENCHMARKS: Registry[Benchmark] = Registry("benchmark", Benchmark)


def benchmark(name: str) -> Benchmark:
    """The registered description of ``name``, with a config error naming the known ones."""
    try:
        return BENCHMARKS.get(name)()
    except KeyError:
        raise ConfigError(f"env.name: unknown benchmark '{name}'; known: {', '.join(BENCHMARKS.names())}") from None


def make_env(config: EnvConfig, task: str) -> gym.Env:
    return benchmark(config.name).make(config, task)


def episode_seed(config: EnvConfig, split: str, index: int) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; use {' | '.join(SPLITS)}")
    return benchmark(config.name).episode_seed(split, index)


def features_for(config: EnvConfig) -> Features:
    """Shapes of the env a config describes, known without starting a simulator."""
    state_dim, action_dim = benchmark(config.name).state_sizes[config.state]
    return Features(state_dim, action_dim, tuple(config.cameras), tuple(config.image_size))


def check_env_config(config: EnvConfig) -> None:
    """Refuse, at load time, names the benchmark does not have (tasks, cameras, state variant)."""
    spec = benchmark(config.name)
    unknown = [t for t in config.tasks if t not in spec.tasks]
    if unknown:
        tasks = spec.tasks
        shown = ", ".join(tasks) if len(tasks) < 10 else f"{len(tasks)} tasks, e.g. {', '.join(tasks[:5])}"
        raise ConfigError(f"env.tasks: {unknown} not among the {config.name} tasks ({shown})")
    if len(set(config.tasks)) != len(config.tasks):
        raise ConfigError(f"env.tasks lists a task twice: {config.tasks}")
    unknown = [c for c in config.cameras if c not in spec.cameras]
    if unknown or len(set(config.cameras)) != len(config.cameras):
        raise ConfigError(f"env.cameras: {list(config.cameras)} is not a list of distinct {config.name} cameras "
                          f"({', '.join(spec.cameras)}; empty for state only)")
    if config.state not in spec.state_sizes:
        raise ConfigError(f"env.state: '{config.state}' is not a {config.name} state variant "
                          f"({', '.join(spec.state_sizes)})")
