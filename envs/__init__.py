"""Environments: one file per benchmark (its env wrapper and its ``Benchmark`` description), the
``env`` config section and the observation/action shapes. Importing this package registers every
benchmark; see ``envs/base.py``.
"""

from envs import metaworld, pusht  # noqa: F401  (registration)
from envs.base import BENCHMARKS, Benchmark, benchmark, check_env_config, episode_seed, features_for, make_env
from envs.config import EnvConfig
from envs.features import Features

__all__ = ["BENCHMARKS", "Benchmark", "EnvConfig", "Features", "benchmark", "check_env_config", "episode_seed",
           "features_for", "make_env"]
