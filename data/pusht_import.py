"""Import the Diffusion Policy PushT demonstrations (zarr) into an EasyVLA episode store.

    python -m data.pusht_import --zarr PATH --out DIR [--state keypoints] [--no-images]

Source layout (``pusht_cchi_v7_replay.zarr``, zarr v2, from ``pusht.zip`` on the Diffusion Policy
data page): ``data/img`` (N, 96, 96, 3) float32 0..255, ``data/state`` (N, 5) [agent_x, agent_y,
block_x, block_y, block_angle], ``data/action`` (N, 2), ``data/keypoint`` (N, 9, 2) and
``meta/episode_ends`` (E,) exclusive ends. The store gets, per frame, the state of the chosen
variant (``envs.pusht``: agent xy, plus the keypoints for "keypoints"), the action, and the image
as uint8 (1, 3, 96, 96), and the whole ``data/state`` as the privileged state (training targets of
auxiliary losses). Episodes are written one at a time, so an interrupted import resumes.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.configuration import ConfigError
from core.errors import ArgumentParser, DamagedFileError, MissingResourceError, run_main
from core.lock import DirectoryLock
from core.network import host_reachable
from data.config import DataConfig
from data.episode_store import EpisodeStore, EpisodeWriter
from data.provider import PROVIDERS, DatasetProvider
from envs import features_for
from envs.config import EnvConfig
from envs.pusht import CAMERAS, DEFAULT_INSTRUCTION, NATIVE_IMAGE_SIZE, STATE_VARIANTS, TASK_NAME, PushT

ZARR_NAME = "pusht_cchi_v7_replay.zarr"
ZIP_NAME = "pusht.zip"
PUSHT_ZIP_URL = "https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip"
# SHA-256 of pusht.zip. None because this code was written on a machine that could not download the
# file, so the digest could not be computed here. While it is None, a download is not verified: its
# digest is printed so that it can be recorded here; once set, a download that differs is rejected.
PUSHT_ZIP_SHA256: str | None = None
DEFAULT_CACHE_DIR = Path("~/.cache/easyvla").expanduser()

_ARRAYS = {"data/state": (5,), "data/action": (2,), "data/keypoint": (9, 2), "data/img": (96, 96, 3)}


def _is_zarr_group(path: Path) -> bool:
    return path.is_dir() and ((path / ".zgroup").is_file() or (path / "zarr.json").is_file())


def open_pusht_zarr(zarr_path: str | Path):
    """Open the zarr read-only and check its layout (a clear error names what is missing)."""
    import zarr

    path = Path(zarr_path)
    if not _is_zarr_group(path):
        raise MissingResourceError(f"{path} is not a zarr directory (expected {ZARR_NAME} from {ZIP_NAME})")
    group = zarr.open_group(str(path), mode="r")
    try:
        ends = group["meta/episode_ends"]
        for name, frame_shape in _ARRAYS.items():
            if tuple(group[name].shape[1:]) != frame_shape:
                raise DamagedFileError(f"{path}/{name} has frames of shape {group[name].shape[1:]}, expected {frame_shape}")
    except KeyError as error:
        raise DamagedFileError(f"{path} lacks {error}; expected data/img, data/state, data/action, data/keypoint and "
                         "meta/episode_ends (the Diffusion Policy PushT layout)") from None
    if ends.ndim != 1 or ends.shape[0] == 0:
        raise DamagedFileError(f"{path}/meta/episode_ends should be a non-empty (E,) array")
    return group


def import_pusht_zarr(zarr_path: str | Path, out_root: str | Path, state: str = "agent_pos", with_images: bool = True,
                      max_episodes: int | None = None, progress: bool = True) -> EpisodeStore:
    """Write the zarr's episodes into an episode store and finalize it (one importer per ``out_root``).

    Episodes already in ``out_root`` (a previous, interrupted import) are checked against the source's
    lengths and skipped.

    Args:
        zarr_path: the ``pusht_cchi_v7_replay.zarr`` directory (see ``find_pusht_data``).
        out_root: store directory; one per (state variant, with_images) combination.
        state: "agent_pos" (S=2) or "keypoints" (S=20: agent xy + 9 keypoints (x, y)).
        with_images: also store data/img as uint8 (T, 1, 3, 96, 96).
        max_episodes: import only the first episodes (tests, quick looks).

    Returns:
        the finalized EpisodeStore.
    """
    if state not in STATE_VARIANTS:
        raise ValueError(f"unknown PushT state variant '{state}'; known: {', '.join(STATE_VARIANTS)}")
    with DirectoryLock(out_root, "PushT import"):
        return _import(zarr_path, Path(out_root), state, with_images, max_episodes, progress)


def _import(zarr_path: str | Path, out_root: Path, state: str, with_images: bool, max_episodes: int | None,
            progress: bool) -> EpisodeStore:
    group = open_pusht_zarr(zarr_path)
    ends = np.asarray(group["meta/episode_ends"][:], dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    n_episodes = len(ends) if max_episodes is None else min(max_episodes, len(ends))
    features = features_for(EnvConfig(name=PushT.name, tasks=[TASK_NAME], cameras=list(CAMERAS) if with_images else [],
                                      image_size=NATIVE_IMAGE_SIZE, state=state))
    writer = EpisodeWriter(out_root, features, fps=PushT.fps,
                           source=f"Diffusion Policy PushT demonstrations ({ZARR_NAME})")
    done = writer.episode_index()
    if len(done) > len(ends):
        raise ValueError(f"{out_root} already holds {len(done)} episodes but {zarr_path} has only {len(ends)}; "
                         "use an empty directory")
    written = [e["length"] for e in done]
    if written != (ends - starts)[:len(written)].tolist():
        raise ValueError(f"the episodes already in {out_root} do not match the lengths of {zarr_path}'s first "
                         f"{len(written)} episodes; they come from other data: use an empty directory")
    arrays = {name: group[name] for name in ("data/state", "data/action", "data/keypoint")}
    if with_images:
        arrays["data/img"] = group["data/img"]
    for episode in tqdm(range(len(done), n_episodes), initial=len(done), total=n_episodes, desc="import pusht",
                        unit="episode", disable=not progress):
        s, e = int(starts[episode]), int(ends[episode])
        raw = {name: np.asarray(array[s:e]) for name, array in arrays.items()}
        agent = raw["data/state"][:, :2]
        if state == "keypoints":
            observation = np.concatenate([agent, raw["data/keypoint"].reshape(e - s, -1)], axis=1)
        else:
            observation = agent
        images = None
        if with_images:
            pixels = np.clip(np.rint(raw["data/img"]), 0, 255).astype(np.uint8)  # (T, 96, 96, 3)
            images = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)[:, None])  # (T, 1, 3, 96, 96)
        writer.add_episode(observation.astype(np.float32), raw["data/action"].astype(np.float32),
                           task=DEFAULT_INSTRUCTION, seed=-1, images=images, env_task=TASK_NAME,
                           privileged=raw["data/state"].astype(np.float32))  # agent xy, block xy and angle
    return writer.finalize()


# -- locating the data ------------------------------------------------------------------------


_reachable = host_reachable  # module-level name, so tests can simulate being offline


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path, expected_sha256: str | None) -> None:
    """Download ``url`` to ``dest`` (via a .part file) with a progress bar, then check its digest."""
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
    actual = digest.hexdigest()
    if expected_sha256 is None:
        print(f"{dest.name}: sha256 {actual} (not verified: no expected digest is recorded; set PUSHT_ZIP_SHA256 "
              "in data/pusht_import.py to this value to verify future downloads)")
    elif actual != expected_sha256.lower():
        part.unlink()
        raise ValueError(f"{url} has sha256 {actual}, expected {expected_sha256}: the download is corrupt or the "
                         "file changed upstream")
    os.replace(part, dest)


def _extract(zip_path: Path, cache_dir: Path) -> Path:
    """Extract the zarr in ``zip_path`` to ``cache_dir/pusht/<zarr>`` (all or nothing) and return it."""
    target = cache_dir / "pusht" / ZARR_NAME
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pusht-extract.", dir=cache_dir))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tmp)  # zipfile drops absolute paths and ".." components
        found = [p for p in sorted(tmp.rglob(ZARR_NAME)) if _is_zarr_group(p)]
        if not found:
            raise ValueError(f"{zip_path} does not contain {ZARR_NAME}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(found[0], target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def find_pusht_data(configured_path: str | Path | None, cache_dir: str | Path = DEFAULT_CACHE_DIR,
                    url: str = PUSHT_ZIP_URL, expected_sha256: str | None = PUSHT_ZIP_SHA256,
                    how_to_configure: str = "set data.path=PATH in the config (train.py) or pass --zarr PATH to "
                                            "python -m data.pusht_import") -> Path:
    """The ``pusht_cchi_v7_replay.zarr`` directory, downloading ``pusht.zip`` only when nothing local exists.

    Looks, in order, at: ``configured_path`` (the zarr directory, a folder holding it, or ``pusht.zip``,
    extracted into the cache); ``cache_dir/pusht/pusht_cchi_v7_replay.zarr``; ``cache_dir/pusht.zip``
    (put there by hand); then downloads ``url`` into ``cache_dir`` and extracts it.

    Args:
        configured_path: a user-configured location, or None.
        cache_dir: where downloads and extracted copies live.
        url: the pusht.zip to download.
        expected_sha256: digest to verify the download against; None prints it instead (see PUSHT_ZIP_SHA256).
        how_to_configure: how a user sets ``configured_path`` in the calling program, for the offline error.

    Raises:
        FileNotFoundError: nothing local and the server cannot be reached; the message says where to put the file.
    """
    cache_dir = Path(cache_dir).expanduser()
    cached = cache_dir / "pusht" / ZARR_NAME
    if configured_path:
        path = Path(configured_path).expanduser()
        if _is_zarr_group(path):
            return path
        if _is_zarr_group(path / ZARR_NAME):
            return path / ZARR_NAME
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise DamagedFileError(f"{path} is neither a {ZARR_NAME} directory nor {ZIP_NAME}")
            return cached if _is_zarr_group(cached) else _extract(path, cache_dir)  # extracted once
        if path.exists():
            raise MissingResourceError(f"{path} is a directory without {ZARR_NAME} in it")
        raise MissingResourceError(f"the PushT data {path} does not exist; {how_to_configure} (a {ZARR_NAME} "
                                   f"directory or {ZIP_NAME}), or leave it empty to use {cache_dir}")
    if _is_zarr_group(cached):
        return cached
    zip_path = cache_dir / ZIP_NAME
    if zip_path.is_file():
        return _extract(zip_path, cache_dir)
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    if not _reachable(host, parsed.port or (80 if parsed.scheme == "http" else 443)):
        raise MissingResourceError(
            f"the PushT demonstrations are not on this machine and {host} cannot be reached (offline?). "
            f"Download {url} elsewhere and put it at {zip_path} (it is extracted on first use), or extract it so "
            f"that {cached} exists, or use a copy elsewhere: {how_to_configure} (a {ZARR_NAME} directory or "
            f"{ZIP_NAME}).")
    cache_dir.mkdir(parents=True, exist_ok=True)
    _download(url, zip_path, expected_sha256)
    return _extract(zip_path, cache_dir)


@PROVIDERS.register("pusht")
class PushTDemonstrations(DatasetProvider):
    """The 206 human demonstrations, imported once from ``data.path``, the cache, or a download."""

    def provide(self, env: EnvConfig, data: DataConfig, root: Path, progress: bool) -> tuple[EpisodeStore, list[int]]:
        if env.cameras and tuple(env.image_size) != NATIVE_IMAGE_SIZE:
            raise ConfigError("env.image_size: the PushT demonstrations are 96x96 images; set env.image_size=[96,96]")
        try:
            store = EpisodeStore(root)
        except FileNotFoundError:
            zarr_path = find_pusht_data(data.path or None, Path(data.root).expanduser() / "downloads")
            store = import_pusht_zarr(zarr_path, root, state=env.state, with_images=bool(env.cameras),
                                      progress=progress)
        return store, list(range(store.num_episodes))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description="Import the Diffusion Policy PushT zarr into an EasyVLA store.")
    parser.add_argument("--zarr", default=None,
                        help=f"{ZARR_NAME} directory or {ZIP_NAME}; default: the cache, else download")
    parser.add_argument("--out", required=True, help="store directory (resumes an interrupted import)")
    parser.add_argument("--state", choices=STATE_VARIANTS, default="agent_pos", help="state variant to store")
    parser.add_argument("--no-images", action="store_true", help="store states and actions only")
    parser.add_argument("--max-episodes", type=int, default=None, help="import only the first N episodes")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="where pusht.zip is downloaded/extracted")
    args = parser.parse_args(argv)
    zarr_path = find_pusht_data(args.zarr, args.cache_dir)
    store = import_pusht_zarr(zarr_path, args.out, state=args.state, with_images=not args.no_images,
                              max_episodes=args.max_episodes)
    print(f"{store.root}: {store.num_episodes} episodes, {store.num_frames} frames, state {args.state} "
          f"(S={store.features.state_dim}), images {'yes' if store.images is not None else 'no'}")


if __name__ == "__main__":
    run_main(main)
