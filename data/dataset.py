"""Training samples: an observation (with history) and the next ``chunk_size`` actions.

Samples with images also carry the episode's first images (read by ``policy.first_frame``).
At an episode's start the history repeats the first frame; past its end the chunk repeats
the last action and ``action_is_pad`` marks those steps, so the loss ignores them.
"""

import json

import numpy as np
import torch
from torch.utils.data import Dataset

from core.files import atomic_write
from core.keys import ACTION, ACTION_IS_PAD, OBS_FIRST_IMAGE, OBS_IMAGE, OBS_PRIVILEGED, OBS_STATE, TASK
from data.episode_store import EpisodeStore


class ChunkDataset(Dataset):
    """
    Args:
        store: a finalized EpisodeStore.
        n_obs_steps: T_obs, frames of history per sample.
        chunk_size: H, future actions per sample.
        episodes: which episodes to sample from (default: all).
    """

    def __init__(self, store: EpisodeStore, n_obs_steps: int, chunk_size: int, episodes: list[int] | None = None):
        self.store = store
        self.n_obs_steps = n_obs_steps
        self.chunk_size = chunk_size
        self.episodes = list(range(store.num_episodes)) if episodes is None else list(episodes)
        # One row per sample: (frame index, episode start, episode end, episode).
        rows = [(t, *store.episode_bounds(e), e) for e in self.episodes for t in range(*store.episode_bounds(e))]
        self._rows = np.asarray(rows, dtype=np.int64).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict:
        t, start, end, episode = (int(v) for v in self._rows[index])
        obs_frames = np.clip(np.arange(t - self.n_obs_steps + 1, t + 1), start, None)
        act_frames = np.arange(t, t + self.chunk_size)
        is_pad = act_frames >= end
        act_frames = np.minimum(act_frames, end - 1)
        item = {
            OBS_STATE: torch.from_numpy(np.ascontiguousarray(self.store.state[obs_frames])),
            ACTION: torch.from_numpy(np.ascontiguousarray(self.store.action[act_frames])),
            ACTION_IS_PAD: torch.from_numpy(is_pad),
            TASK: self.store.task(episode),
        }
        if self.store.images is not None:
            item[OBS_IMAGE] = torch.from_numpy(np.ascontiguousarray(self.store.images[obs_frames]))
            item[OBS_FIRST_IMAGE] = torch.from_numpy(np.array(self.store.images[start]))  # for policy.first_frame
        if self.store.privileged is not None:
            item[OBS_PRIVILEGED] = torch.from_numpy(np.array(self.store.privileged[t]))
        return item


def compute_stats(store: EpisodeStore, relative_actions: bool, chunk_size: int) -> dict:
    """Normalizer statistics ({key: {min, max, mean, std}}), cached as JSON in the store.

    With relative actions the statistics are those of the head's targets, action[t + k] - state[t]
    for every k < chunk_size inside the episode, not of the absolute actions.
    """
    name = f"stats_relative_h{chunk_size}.json" if relative_actions else "stats.json"
    path = store.root / "frames" / name
    if path.is_file():
        cached = {k: {s: np.asarray(v) for s, v in d.items()} for k, d in json.loads(path.read_text()).items()}
        if store.privileged is None or OBS_PRIVILEGED in cached:  # else written before the store had it
            return cached
    state = np.asarray(store.state, dtype=np.float64)
    action = np.asarray(store.action, dtype=np.float64)
    if relative_actions:
        a = action.shape[1]
        deltas = []
        for episode in range(store.num_episodes):
            start, end = store.episode_bounds(episode)
            for k in range(chunk_size):
                deltas.append(action[start + k:end] - state[start:end - k, :a])
        action = np.concatenate(deltas)

    def describe(x: np.ndarray) -> dict:
        return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}

    stats = {OBS_STATE: describe(state), ACTION: describe(action)}
    if store.privileged is not None:
        stats[OBS_PRIVILEGED] = describe(np.asarray(store.privileged, dtype=np.float64))
    atomic_write(path, json.dumps({k: {s: v.tolist() for s, v in d.items()} for k, d in stats.items()}))
    return stats
