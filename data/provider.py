"""Dataset providers: how each benchmark's demonstrations are found, collected or imported.

One provider per benchmark, registered under its ``env.name`` beside the code that makes the data
(``data/collect.py`` for Meta-World's scripted experts, ``data/pusht_import.py`` for PushT's
human demonstrations). ``data/provision.py`` picks the one a config names.
"""

from abc import ABC, abstractmethod
from pathlib import Path

from core.registry import Registry
from data.config import DataConfig
from data.episode_store import EpisodeStore
from envs.config import EnvConfig


class DatasetProvider(ABC):
    @abstractmethod
    def provide(self, env: EnvConfig, data: DataConfig, root: Path, progress: bool) -> tuple[EpisodeStore, list[int]]:
        """The store at ``root`` (made there when missing or too small) and the episodes to train on."""


PROVIDERS: Registry[DatasetProvider] = Registry("dataset provider", DatasetProvider)
