"""Find, collect or import the dataset a config trains on, through its benchmark's provider."""

from data import collect, pusht_import  # noqa: F401  (registration of the providers)
from data.config import DataConfig
from data.episode_store import EpisodeStore
from data.provider import PROVIDERS
from envs.config import EnvConfig


def ensure_dataset(env: EnvConfig, data: DataConfig, progress: bool = True) -> tuple[EpisodeStore, list[int]]:
    """The store for ``env`` (collected or imported when missing) and the episodes to train on."""
    provider = PROVIDERS.get(env.name)()
    return provider.provide(env, data, data.dataset_dir(env), progress)
