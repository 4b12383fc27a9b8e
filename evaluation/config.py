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
        if self.episodes < 1 or self.n_envs < 1 or self.val_episodes < 0 or self.videos < 0 or self.every < 0:
            raise ConfigError("eval: episodes and n_envs must be >= 1; val_episodes, videos, every >= 0")
