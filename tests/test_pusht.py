"""PushT: the gym-pusht wrapper, the zarr importer and locating the data.

Tests marked by ``shared_zarr`` read the real Diffusion Policy release and are skipped without it
(set EASYVLA_PUSHT_ZARR to use a copy elsewhere).
"""

import functools
import http.server
import os
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from core.keys import OBS_IMAGE, OBS_STATE
from data.episode_store import EpisodeStore, EpisodeWriter
from data.pusht_import import ZARR_NAME, find_pusht_data, import_pusht_zarr, main, open_pusht_zarr
from envs import features_for
from envs.config import EnvConfig
from envs.pusht import DEFAULT_INSTRUCTION, PushTEnv, block_keypoints, episode_metrics

LENGTHS = (4, 2, 5)
GOAL_STATE = np.array([100.0, 100.0, 256.0, 256.0, np.pi / 4])  # the block exactly on gym-pusht's goal pose
FAR_STATE = np.array([100.0, 100.0, 400.0, 100.0, 0.0])


# -- a synthetic zarr in the Diffusion Policy layout ------------------------------------------


def synthetic_arrays(lengths=LENGTHS, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    return {
        "data/img": rng.integers(0, 256, (n, 96, 96, 3)).astype(np.float32),
        "data/state": rng.uniform(0, 512, (n, 5)).astype(np.float32),
        "data/action": rng.uniform(0, 512, (n, 2)).astype(np.float32),
        "data/keypoint": rng.uniform(0, 512, (n, 9, 2)).astype(np.float32),
        "meta/episode_ends": np.cumsum(lengths).astype(np.int64),
    }


def write_zarr(path: Path, arrays: dict) -> Path:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for name, data in arrays.items():
        group.create_array(name, data=data, chunks=(3, *data.shape[1:]))  # chunks straddle episode boundaries
    return path


@pytest.fixture
def synthetic(tmp_path):
    arrays = synthetic_arrays()
    return write_zarr(tmp_path / ZARR_NAME, arrays), arrays


def expected_state(arrays: dict, variant: str) -> np.ndarray:
    agent = arrays["data/state"][:, :2]
    if variant == "agent_pos":
        return agent
    return np.concatenate([agent, arrays["data/keypoint"].reshape(len(agent), 18)], axis=1)


# -- importer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,with_images", [("agent_pos", True), ("keypoints", True), ("keypoints", False)])
def test_import_preserves_boundaries_values_and_dtypes(synthetic, tmp_path, variant, with_images):
    zarr_path, arrays = synthetic
    store = import_pusht_zarr(zarr_path, tmp_path / "store", state=variant, with_images=with_images, progress=False)
    assert store.episode_ends.tolist() == [4, 6, 11] and store.episode_bounds(1) == (4, 6)
    assert store.fps == 10 and store.state.dtype == np.float32 and store.action.dtype == np.float32
    assert store.features == features_for(EnvConfig(name="pusht", tasks=["pusht"],
                                                    cameras=["top"] if with_images else [], state=variant))
    np.testing.assert_array_equal(store.state, expected_state(arrays, variant))
    np.testing.assert_array_equal(store.action, arrays["data/action"])
    if with_images:
        assert store.images.shape == (11, 1, 3, 96, 96) and store.images.dtype == np.uint8
        np.testing.assert_array_equal(store.images[:, 0].transpose(0, 2, 3, 1), arrays["data/img"].astype(np.uint8))
    else:
        assert store.images is None
    assert all(e == {"task": DEFAULT_INSTRUCTION, "env_task": "pusht", "seed": -1} for e in store.episodes)


def test_import_resumes_after_an_interruption(synthetic, tmp_path):
    zarr_path, arrays = synthetic
    out = tmp_path / "store"
    import_pusht_zarr(zarr_path, out, state="keypoints", with_images=True, max_episodes=1, progress=False)
    first = out / "episodes" / "000000.npz"
    stamp = first.stat().st_mtime_ns
    (out / "episodes" / ".000001.tmpabc.npz").write_bytes(b"killed mid-write")
    assert EpisodeWriter(out, EpisodeStore(out).features, fps=10).num_episodes == 1
    store = import_pusht_zarr(zarr_path, out, state="keypoints", with_images=True, progress=False)
    assert first.stat().st_mtime_ns == stamp  # skipped, not rewritten
    assert store.num_episodes == 3 and store.num_frames == 11
    np.testing.assert_array_equal(store.state, expected_state(arrays, "keypoints"))
    np.testing.assert_array_equal(store.images[:, 0].transpose(0, 2, 3, 1), arrays["data/img"].astype(np.uint8))


def test_import_refuses_a_store_of_other_data_and_a_wrong_layout(synthetic, tmp_path):
    zarr_path, _ = synthetic
    other = write_zarr(tmp_path / "other.zarr", synthetic_arrays(lengths=(3, 8)))
    import_pusht_zarr(other, tmp_path / "store", with_images=False, max_episodes=1, progress=False)
    with pytest.raises(ValueError, match="do not match"):
        import_pusht_zarr(zarr_path, tmp_path / "store", with_images=False, progress=False)
    arrays = synthetic_arrays()
    del arrays["data/keypoint"]
    with pytest.raises(ValueError, match="data/keypoint"):
        open_pusht_zarr(write_zarr(tmp_path / "broken.zarr", arrays))
    with pytest.raises(ValueError, match="unknown PushT state"):
        import_pusht_zarr(zarr_path, tmp_path / "x", state="pixels")


def test_cli(synthetic, tmp_path, capsys):
    zarr_path, _ = synthetic
    main(["--zarr", str(zarr_path), "--out", str(tmp_path / "cli"), "--state", "keypoints", "--no-images"])
    assert "3 episodes, 11 frames" in capsys.readouterr().out
    store = EpisodeStore(tmp_path / "cli")
    assert store.features.state_dim == 20 and store.images is None


# -- the shared Diffusion Policy release --------------------------------------------------------


def _shared_zarr() -> Path:
    override = os.environ.get("EASYVLA_PUSHT_ZARR")
    return Path(override) if override else \
        Path(__file__).resolve().parents[2] / "shared/datasets/pusht/pusht_cchi_v7_replay.zarr"


@pytest.fixture(scope="module")
def shared_zarr():
    path = _shared_zarr()
    if not (path / ".zgroup").is_file() and not (path / "zarr.json").is_file():
        pytest.skip(f"the PushT zarr is not at {path} (set EASYVLA_PUSHT_ZARR to its location)")
    return open_pusht_zarr(path)


def test_shared_dataset_size_and_layout(shared_zarr):
    ends = shared_zarr["meta/episode_ends"][:]
    assert len(ends) == 206 and int(ends[-1]) == 25_650 and np.all(np.diff(ends) > 0)
    assert shared_zarr["data/img"].shape == (25_650, 96, 96, 3)
    assert shared_zarr["data/state"].shape == (25_650, 5) and shared_zarr["data/keypoint"].shape == (25_650, 9, 2)


def test_shared_dataset_first_episodes_import(shared_zarr, tmp_path):
    store = import_pusht_zarr(_shared_zarr(), tmp_path, state="keypoints", with_images=False, max_episodes=2,
                              progress=False)
    ends = shared_zarr["meta/episode_ends"][:2]
    assert store.episode_ends.tolist() == ends.tolist()
    n = int(ends[-1])
    np.testing.assert_array_equal(store.state[:, :2], shared_zarr["data/state"][:n, :2])
    np.testing.assert_array_equal(store.state[:, 2:], shared_zarr["data/keypoint"][:n].reshape(n, 18))
    np.testing.assert_array_equal(store.action, shared_zarr["data/action"][:n])


def test_keypoints_match_the_dataset_convention(shared_zarr):
    """data/keypoint is the fixed local keypoint set moved by the block pose in data/state, over all frames."""
    state, keypoint = shared_zarr["data/state"][:], shared_zarr["data/keypoint"][:]
    error = np.abs(block_keypoints(state[:, 2:]) - keypoint).max(axis=(1, 2))
    assert np.median(error) < 1e-3 and np.quantile(error, 0.99) < 0.1  # a few episode starts are ~1-2 px off
    env = PushTEnv("keypoints", cameras=("top",))
    images = shared_zarr["data/img"]
    for frame in (100, 5000, 12345, 25649):
        obs = env.set_state(state[frame])
        np.testing.assert_allclose(obs[OBS_STATE][:2], state[frame, :2])
        np.testing.assert_allclose(obs[OBS_STATE][2:].reshape(9, 2), keypoint[frame], atol=0.05)
        rendered = obs[OBS_IMAGE][0].transpose(1, 2, 0).astype(np.float32)
        assert np.abs(rendered - images[frame]).mean() < 2.0  # the same camera as the demonstrations
    env.close()


def test_replaying_demonstration_actions_reproduces_the_states(shared_zarr):
    """Actions are absolute targets at 10 Hz: from a demo's first state its actions retrace the demo."""
    state, action = shared_zarr["data/state"][:21], shared_zarr["data/action"][:20]
    env = PushTEnv("agent_pos", cameras=())
    env.set_state(state[0])
    for t in range(20):
        obs, *_ = env.step(action[t])
        np.testing.assert_allclose(obs[OBS_STATE], state[t + 1, :2], atol=1e-3)
    block = env._pusht.block
    np.testing.assert_allclose([*block.position, block.angle % (2 * np.pi)], state[20, 2:], atol=1e-3)
    env.close()


# -- the wrapper --------------------------------------------------------------------------------


def test_goal_pose_succeeds_and_far_pose_does_not():
    env = PushTEnv("agent_pos", cameras=())
    env.set_state(GOAL_STATE)
    assert env.coverage() == pytest.approx(1.0, abs=1e-6)
    _, reward, terminated, truncated, info = env.step(GOAL_STATE[:2])  # the agent stays put
    assert info["success"] and terminated and not truncated and reward == pytest.approx(1.0)
    assert info["coverage"] == pytest.approx(1.0, abs=1e-6)
    env.set_state(FAR_STATE)
    _, reward, terminated, truncated, info = env.step(FAR_STATE[:2])
    assert not info["success"] and not terminated and info["coverage"] < 0.1 and reward < 0.1
    env.close()


@pytest.mark.parametrize("variant,cameras,dim", [("agent_pos", (), 2), ("keypoints", (), 20),
                                                 ("agent_pos", ("top",), 2), ("keypoints", ("top",), 20)])
def test_observation_shapes(variant, cameras, dim):
    env = PushTEnv(variant, cameras=cameras)
    obs, info = env.reset(seed=0)
    assert obs[OBS_STATE].shape == (dim,) and obs[OBS_STATE].dtype == np.float32
    assert (OBS_IMAGE in obs) == bool(cameras) and env.features.state_dim == dim
    if cameras:
        assert obs[OBS_IMAGE].shape == (1, 3, 96, 96) and obs[OBS_IMAGE].dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert env.task == "pusht" and env.instruction == DEFAULT_INSTRUCTION and "coverage" in info
    obs, *_ = env.step(np.array([256.0, 256.0], dtype=np.float32))
    assert obs[OBS_STATE].shape == (dim,)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 and frame.shape[0] >= 96
    env.close()


def test_keypoint_state_agrees_with_the_block_pose():
    env = PushTEnv("keypoints", cameras=())
    obs = env.set_state(np.array([50.0, 60.0, 300.0, 200.0, 1.0]))
    np.testing.assert_allclose(obs[OBS_STATE][:2], [50.0, 60.0])
    np.testing.assert_allclose(obs[OBS_STATE][2:], block_keypoints(np.array([300.0, 200.0, 1.0])).reshape(-1),
                               rtol=1e-6)
    env.close()


def test_state_only_env_never_renders(monkeypatch):
    env = PushTEnv("keypoints", cameras=())

    def no_render(*args, **kwargs):
        raise AssertionError("a state-only env rendered an image")

    monkeypatch.setattr(env._pusht, "_render", no_render)
    env.reset(seed=1)
    for _ in range(3):
        env.step(env.action_space.sample())
    env.close()


def test_reset_is_reproducible_with_a_seed():
    def rollout(seed):
        env = PushTEnv("keypoints", cameras=("top",))
        obs, _ = env.reset(seed=seed)
        out = [obs[OBS_STATE], obs[OBS_IMAGE]]
        for x in (100.0, 300.0, 200.0):
            obs, *_ = env.step(np.array([x, 400.0 - x]))
            out.append(obs[OBS_STATE])
        env.close()
        return out

    first, again, other = rollout(7), rollout(7), rollout(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_step_cap_truncates():
    env = PushTEnv("agent_pos", cameras=(), max_episode_steps=3)
    env.set_state(FAR_STATE)
    flags = [env.step(FAR_STATE[:2])[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.reset(seed=0)  # a new episode gets a full budget again
    assert not env.step(FAR_STATE[:2])[3]
    env.close()


def test_invalid_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="single camera"):
        PushTEnv(cameras=("front",))
    with pytest.raises(ValueError, match="unknown PushT state"):
        PushTEnv(state="pixels")
    env = PushTEnv(cameras=())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="target"):
        env.step(np.zeros(3))
    env.close()


def test_episode_metrics():
    infos = [{"success": False, "coverage": 0.5}, {"success": True, "coverage": 0.97},
             {"success": False, "coverage": 0.9}]
    metrics = episode_metrics(infos)
    assert metrics["success"] and metrics["steps"] == 3
    assert metrics["max_coverage"] == pytest.approx(0.97) and metrics["final_coverage"] == pytest.approx(0.9)
    assert metrics["max_reward"] == pytest.approx(1.0)
    assert episode_metrics(infos[:1])["max_reward"] == pytest.approx(0.5 / 0.95)


# -- locating the data --------------------------------------------------------------------------


def _zip_of(zarr_path: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in zarr_path.rglob("*"):
            archive.write(file, Path("pusht") / ZARR_NAME / file.relative_to(zarr_path))
    return zip_path


def test_find_uses_a_configured_zarr_folder_or_zip(synthetic, tmp_path):
    zarr_path, _ = synthetic
    cache = tmp_path / "cache"
    assert find_pusht_data(str(zarr_path), cache) == zarr_path
    assert find_pusht_data(zarr_path.parent, cache) == zarr_path  # the folder holding it
    extracted = find_pusht_data(_zip_of(zarr_path, tmp_path / "pusht.zip"), cache)
    assert extracted == cache / "pusht" / ZARR_NAME
    assert open_pusht_zarr(extracted)["meta/episode_ends"][:].tolist() == [4, 6, 11]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no extraction leftovers
    assert find_pusht_data(None, cache) == extracted  # the cached copy, no network


def test_find_offline_without_data_names_where_to_put_it(tmp_path, monkeypatch):
    from data import pusht_import

    monkeypatch.setattr(pusht_import, "_reachable", lambda *args, **kwargs: False)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="cannot be reached") as error:
        find_pusht_data(None, cache)
    assert str(cache / "pusht.zip") in str(error.value) and "--zarr" in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.zarr does not exist"):  # a typo is not a reason to download
        find_pusht_data(tmp_path / "missing.zarr", cache)


def test_find_fails_fast_when_the_server_refuses(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FileNotFoundError, match="cannot be reached"):
        find_pusht_data(None, tmp_path, url=f"http://127.0.0.1:{port}/pusht.zip")


@pytest.fixture
def served_zip(synthetic, tmp_path):
    """pusht.zip (of the synthetic zarr) served over loopback HTTP."""
    site = tmp_path / "site"
    site.mkdir()
    _zip_of(synthetic[0], site / "pusht.zip")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pusht.zip", site / "pusht.zip"
    server.shutdown()
    server.server_close()


def test_find_downloads_verifies_and_extracts(served_zip, tmp_path, capsys):
    import hashlib

    url, source = served_zip
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="sha256"):
        find_pusht_data(None, tmp_path / "bad", url=url, expected_sha256="0" * 64)
    assert not list((tmp_path / "bad").glob("pusht.zip*"))  # the corrupt download is gone
    path = find_pusht_data(None, tmp_path / "unknown", url=url, expected_sha256=None)
    assert digest in capsys.readouterr().out  # no recorded digest: it is printed to be recorded
    assert open_pusht_zarr(path)["data/state"].shape == (11, 5)
    assert find_pusht_data(None, tmp_path / "good", url=url, expected_sha256=digest).is_dir()
