"""Environments: benchmark wrappers, their configs and their observation/action shapes."""

from envs.config import EnvConfig
from envs.features import Features
from envs.specs import features_for

__all__ = ["EnvConfig", "Features", "features_for"]
