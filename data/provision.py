"""Find, collect or import the dataset a config trains on."""

import hashlib
from pathlib import Path

from core.configuration import ConfigError
from core.schema import Config
from data.episode_store import EpisodeStore


def dataset_dir(config: Config) -> Path:
    """A directory per (benchmark, tasks, cameras, image size, state variant)."""
    env = config.env
    tasks = "-".join(env.tasks)
    if len(tasks) > 40:
        tasks = f"{len(env.tasks)}tasks-{hashlib.sha1(tasks.encode()).hexdigest()[:8]}"
    cameras = "-".join(env.cameras) + f"_{env.image_size[0]}x{env.image_size[1]}" if env.cameras else "nocam"
    return Path(config.data.root).expanduser() / f"{env.name}_{tasks}_{cameras}_{env.state}"


def ensure_dataset(config: Config, progress: bool = True) -> tuple[EpisodeStore, list[int]]:
    """The store for ``config`` (collected or imported when missing) and the episodes to train on."""
    root = dataset_dir(config)
    if config.env.name == "metaworld":
        from data.collect import collect_metaworld

        wanted = config.data.episodes_per_task
        try:
            store = EpisodeStore(root)
            counts = {t: sum(e["env_task"] == t for e in store.episodes) for t in config.env.tasks}
            if min(counts.values()) < wanted:
                raise FileNotFoundError
        except FileNotFoundError:
            store = collect_metaworld(config.env, wanted, root, progress)
        per_task: dict[str, list[int]] = {}
        for i, episode in enumerate(store.episodes):
            per_task.setdefault(episode["env_task"], []).append(i)
        return store, sorted(i for t in config.env.tasks for i in per_task[t][:wanted])
    if config.env.name == "pusht":
        from data.pusht_import import find_pusht_data, import_pusht_zarr

        if config.env.cameras and tuple(config.env.image_size) != (96, 96):
            raise ConfigError("env.image_size: the PushT demonstrations are 96x96 images; set env.image_size=[96,96]")
        try:
            store = EpisodeStore(root)
        except FileNotFoundError:
            zarr_path = find_pusht_data(config.data.path or None, Path(config.data.root).expanduser() / "downloads")
            store = import_pusht_zarr(zarr_path, root, state=config.env.state, with_images=bool(config.env.cameras))
        return store, list(range(store.num_episodes))
    raise ValueError(f"no dataset provider for env '{config.env.name}'")
