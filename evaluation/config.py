"""The ``eval`` config section: closed-loop evaluation."""

from dataclasses import dataclass

from core.configuration import ConfigError, doc_field


@dataclass
class EvalConfig:
    episodes: int = doc_field(50, "episodes per task on the held-out evaluation layouts")
    val_episodes: int = doc_field(10, "episodes per task on validation layouts, during training (picks 'best')")
    every: int = doc_field(2000, "training steps between validation rollouts (0: only at the end)")
    n_envs: int = doc_field(5, "envs stepped in lockstep with one batched policy call")
    videos: int = doc_field(2, "episodes recorded as video")

    def __post_init__(self):
        for key, least in (("episodes", 1), ("n_envs", 1), ("val_episodes", 0), ("videos", 0), ("every", 0)):
            if getattr(self, key) < least:
                raise ConfigError(f"eval.{key} must be >= {least}, got {getattr(self, key)}")
