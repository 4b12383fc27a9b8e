"""The ``data`` config section: where demonstrations come from."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from core.configuration import ConfigError, doc_field
from envs.config import EnvConfig


@dataclass
class DataConfig:
    root: str = doc_field("~/.cache/easyvla/datasets", "where datasets are collected, imported and cached")
    episodes_per_task: int = doc_field(100, "scripted-expert demonstrations per task (Meta-World)")
    path: str = doc_field("", "PushT: a local pusht.zip or .zarr directory (empty: cache, else download)")

    def __post_init__(self):
        if self.episodes_per_task < 1:
            raise ConfigError(f"data.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not self.root:
            raise ConfigError("data.root must name a directory (default ~/.cache/easyvla/datasets)")

    def dataset_dir(self, env: EnvConfig) -> Path:
        """A directory per (benchmark, tasks, cameras, image size, state variant) under ``root``."""
        tasks = "-".join(env.tasks)
        if len(tasks) > 40:
            tasks = f"{len(env.tasks)}tasks-{hashlib.sha1(tasks.encode()).hexdigest()[:8]}"
        cameras = "-".join(env.cameras) + f"_{env.image_size[0]}x{env.image_size[1]}" if env.cameras else "nocam"
        scene = "" if env.goal_marker else "_nomarker"  # images and instructions differ
        return Path(self.root).expanduser() / f"{env.name}_{tasks}_{cameras}_{env.state}{scene}"
