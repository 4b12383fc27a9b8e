"""Demonstrations on disk: written one episode at a time, read back memory-mapped.

    root/
        meta.json              features (shapes, cameras), fps, source
        episodes/000042.npz    one finished episode each, written atomically (tmp file + rename)
        frames/                after ``finalize``: images.npy, state.npy, action.npy (memory-mappable),
                               privileged.npy (the simulator's full state, when every episode has it),
                               episode_ends.npy (exclusive ends), episodes.json (instruction, task, seed each)

An interrupted collection loses at most the episode in progress: every finished episode is a
complete file, and ``EpisodeWriter`` resumes from them. ``finalize`` rebuilds ``frames/`` in a
temporary directory and renames it into place, so readers never see half-written arrays.
"""

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from core.files import atomic_write, swap_directory
from envs.features import Features

FORMAT_VERSION = 1


class EpisodeWriter:
    """Appends episodes to a store, resuming whatever a previous (possibly killed) run finished.

    Args:
        root: store directory (created if missing).
        features: shapes of what will be written; must match an existing store's.
        fps: control rate of the recordings.
        source: free text saying where the data came from (shown in listings).
    """

    def __init__(self, root: str | Path, features: Features, fps: int, source: str = ""):
        self.root = Path(root)
        self.features = features
        (self.root / "episodes").mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "meta.json"
        meta = {"format": FORMAT_VERSION, "features": features.to_json(), "fps": fps, "source": source}
        if meta_path.exists():
            existing = json.loads(meta_path.read_text())
            if Features.from_json(existing["features"]) != features:
                raise ValueError(f"{self.root} holds data with features {existing['features']}, not "
                                 f"{features.to_json()}; "
                                 "use another directory for a different camera set or state variant")
        else:
            atomic_write(meta_path, json.dumps(meta, indent=2))
        # A crash mid-write leaves only these. Writers hold the dataset's lock (data.collect,
        # data.pusht_import), so nobody else is writing them.
        for stale in (self.root / "episodes").glob(".*.tmp*"):
            stale.unlink()
        for stale in self.root.glob(".frames.*"):  # a killed finalize
            shutil.rmtree(stale, ignore_errors=True)

    def _episode_files(self) -> list[Path]:
        return sorted((self.root / "episodes").glob("[0-9]*.npz"))

    @property
    def num_episodes(self) -> int:
        return len(self._episode_files())

    def episode_index(self) -> list[dict]:
        """``{"task", "env_task", "seed", "length"}`` of each finished episode, in order (reads only small arrays)."""
        index = []
        for path in self._episode_files():
            with np.load(path) as f:
                index.append({"task": str(f["task"]), "env_task": str(f["env_task"]), "seed": int(f["seed"]),
                              "length": int(f["action"].shape[0])})
        return index

    def add_episode(self, state: np.ndarray, action: np.ndarray, task: str, seed: int = -1,
                    images: np.ndarray | None = None, env_task: str = "",
                    privileged: np.ndarray | None = None) -> None:
        """Write one finished episode.

        Args:
            state: (T, S) float32.
            action: (T, A) float32, the action taken at each step.
            task: the instruction.
            env_task: the benchmark's task name (e.g. reach-v3), for per-task bookkeeping.
            seed: the layout seed it was recorded on (-1 if unknown).
            images: (T, N_cam, 3, H, W) uint8, required iff the features have cameras.
            privileged: (T, P) float32, the simulator's full state at each step (training targets for
                auxiliary losses, never a policy input); optional, but then in every episode of the store.
        """
        f = self.features
        steps = len(action)
        if steps == 0:
            raise ValueError("an episode needs at least one step")
        if state.shape != (steps, f.state_dim) or action.shape != (steps, f.action_dim):
            raise ValueError(f"state {state.shape} / action {action.shape} do not match ({steps}, {f.state_dim}) / "
                             f"({steps}, {f.action_dim})")
        arrays = {"state": state.astype(np.float32), "action": action.astype(np.float32),
                  "task": np.array(task), "env_task": np.array(env_task), "seed": np.array(seed)}
        if f.has_images:
            expected = (steps, len(f.cameras), 3, *f.image_size)
            if images is None or images.shape != expected or images.dtype != np.uint8:
                got = None if images is None else (images.shape, images.dtype)
                raise ValueError(f"images must be uint8 {expected}; got {got}")
            arrays["images"] = images
        if privileged is not None:
            if privileged.ndim != 2 or len(privileged) != steps:
                raise ValueError(f"privileged must be ({steps}, P); got {privileged.shape}")
            arrays["privileged"] = privileged.astype(np.float32)
        path = self.root / "episodes" / f"{self.num_episodes:06d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(path, buffer.getvalue())

    def finalize(self) -> "EpisodeStore":
        """Concatenate the episodes into memory-mappable arrays (atomically) and open them."""
        files = self._episode_files()
        if not files:
            raise ValueError(f"{self.root} has no episodes to finalize")
        lengths, episodes, privileged_dims = [], [], set()
        for path in files:
            with np.load(path) as f:
                lengths.append(int(f["action"].shape[0]))
                episodes.append({"task": str(f["task"]), "env_task": str(f["env_task"]), "seed": int(f["seed"])})
                privileged_dims.add(f["privileged"].shape[1] if "privileged" in f.files else None)
        if len(privileged_dims) > 1:
            raise ValueError(f"{self.root}: the episodes disagree on the privileged state ({privileged_dims}: some "
                             "lack it); record them all alike, in another directory")
        privileged_dim = privileged_dims.pop()
        total, f_ = sum(lengths), self.features
        tmp = Path(tempfile.mkdtemp(prefix=".frames.", dir=self.root))
        outputs = {
            "state": np.lib.format.open_memmap(tmp / "state.npy", "w+", np.float32, (total, f_.state_dim)),
            "action": np.lib.format.open_memmap(tmp / "action.npy", "w+", np.float32, (total, f_.action_dim)),
        }
        if f_.has_images:
            shape = (total, len(f_.cameras), 3, *f_.image_size)
            outputs["images"] = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, shape)
        if privileged_dim is not None:
            outputs["privileged"] = np.lib.format.open_memmap(tmp / "privileged.npy", "w+", np.float32,
                                                              (total, privileged_dim))
        start = 0
        for path, length in zip(files, lengths):
            with np.load(path) as f:
                for key, out in outputs.items():
                    out[start:start + length] = f[key]
            start += length
        for out in outputs.values():
            out.flush()
        del outputs
        np.save(tmp / "episode_ends.npy", np.cumsum(lengths).astype(np.int64))
        (tmp / "episodes.json").write_text(json.dumps(episodes))
        swap_directory(tmp, self.root / "frames")
        return EpisodeStore(self.root)


class EpisodeStore:
    """Read-only, memory-mapped view of a finalized store."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        frames = self.root / "frames"
        if not (frames / "episode_ends.npy").is_file():
            raise FileNotFoundError(f"{self.root} is not a finalized EasyVLA dataset (no frames/episode_ends.npy); "
                                    "collect or import data first")
        meta = json.loads((self.root / "meta.json").read_text())
        self.features = Features.from_json(meta["features"])
        self.fps = int(meta["fps"])
        self.source = meta.get("source", "")
        self.episode_ends = np.load(frames / "episode_ends.npy")
        self.episodes = json.loads((frames / "episodes.json").read_text())
        self.state = np.load(frames / "state.npy", mmap_mode="r")
        self.action = np.load(frames / "action.npy", mmap_mode="r")
        self.images = np.load(frames / "images.npy", mmap_mode="r") if self.features.has_images else None
        privileged = frames / "privileged.npy"  # stores recorded before it existed have none
        self.privileged = np.load(privileged, mmap_mode="r") if privileged.is_file() else None

    @property
    def privileged_dim(self) -> int:
        """P, the size of the recorded simulator state (0 when the store has none)."""
        return 0 if self.privileged is None else int(self.privileged.shape[1])

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def num_frames(self) -> int:
        return int(self.episode_ends[-1])

    def episode_bounds(self, episode: int) -> tuple[int, int]:
        """[start, end) frame indices of an episode."""
        start = int(self.episode_ends[episode - 1]) if episode > 0 else 0
        return start, int(self.episode_ends[episode])

    def task(self, episode: int) -> str:
        return self.episodes[episode]["task"]
