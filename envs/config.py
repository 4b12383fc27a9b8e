"""The ``env`` config section, shared by every benchmark."""

from dataclasses import dataclass

from core.configuration import ConfigError, doc_field


@dataclass
class EnvConfig:
    name: str = doc_field("metaworld", "benchmark: a key of envs.BENCHMARKS, one file in envs/ each (metaworld, pusht)")
    tasks: list[str] = doc_field(default_factory=lambda: ["reach-v3"], doc="task names (Meta-World); one model for all")
    cameras: list[str] = doc_field(default_factory=lambda: ["corner"], doc="camera names; empty for state-only")
    image_size: tuple[int, int] = doc_field((96, 96), "(H, W) of rendered images")
    state: str = doc_field("proprio", "state variant: proprio | full (Meta-World), agent_pos | keypoints (PushT)")
    max_episode_steps: int = doc_field(500, "episode cap")
    goal_marker: bool = doc_field(True, "Meta-World: draw the goal as a 3 cm magenta sphere (false: the stock "
                                        "scene, its goal a small site; instructions then name no marker)")

    def __post_init__(self):
        if not self.tasks:
            raise ConfigError("env.tasks must name at least one task")
        if self.cameras and min(self.image_size) < 32:
            raise ConfigError(f"env.image_size {self.image_size} is too small for ResNet18 (at least 32x32)")
        if self.max_episode_steps < 1:
            raise ConfigError(f"env.max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if self.cameras and max(self.image_size) > 1024:
            raise ConfigError(f"env.image_size {self.image_size} is larger than 1024 pixels a side")
        from envs import check_env_config  # the benchmarks' registry reads this module: import at call time

        check_env_config(self)
