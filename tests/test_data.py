"""Episode store (atomic, resumable, memory-mapped) and the chunk sampler."""

import numpy as np
import pytest
import torch

from core.keys import ACTION, ACTION_IS_PAD, OBS_FIRST_IMAGE, OBS_IMAGE, OBS_PRIVILEGED, OBS_STATE, TASK
from data.dataset import ChunkDataset, compute_stats
from data.episode_store import EpisodeStore, EpisodeWriter
from envs.features import Features

FEATURES = Features(state_dim=2, action_dim=2, cameras=("top",), image_size=(8, 8))


def episode(length: int, offset: float):
    """State counts frames (t + offset); action = state + 0.5; image pixels hold the frame number."""
    steps = np.arange(length, dtype=np.float32) + offset
    state = np.stack([steps, -steps], axis=1)
    images = np.broadcast_to((np.arange(length) % 256).astype(np.uint8)[:, None, None, None, None],
                             (length, 1, 3, 8, 8)).copy()
    return state, state + 0.5, images


def write_store(root, lengths=(5, 3)) -> EpisodeStore:
    writer = EpisodeWriter(root, FEATURES, fps=10, source="test")
    for i, length in enumerate(lengths):
        state, action, images = episode(length, 100.0 * i)
        writer.add_episode(state, action, task=f"task {i}", seed=i, images=images, env_task=f"t{i}")
    return writer.finalize()


def test_round_trip_preserves_values_and_boundaries(tmp_path):
    store = write_store(tmp_path)
    assert store.num_episodes == 2 and store.num_frames == 8
    assert store.episode_bounds(1) == (5, 8)
    assert isinstance(store.images, np.memmap) and store.images.dtype == np.uint8
    state, action, images = episode(3, 100.0)
    np.testing.assert_array_equal(store.state[5:8], state)
    np.testing.assert_array_equal(store.action[5:8], action)
    np.testing.assert_array_equal(store.images[5:8], images)
    assert store.task(1) == "task 1" and store.episodes[1]["env_task"] == "t1" and store.features == FEATURES


def test_interrupted_writing_resumes_and_ignores_partial_files(tmp_path):
    writer = EpisodeWriter(tmp_path, FEATURES, fps=10)
    state, action, images = episode(4, 0.0)
    writer.add_episode(state, action, "a", images=images)
    (tmp_path / "episodes" / ".000001.tmpxyz.npz").write_bytes(b"half an episode")  # killed mid-write
    (tmp_path / ".frames.k1ll3d").mkdir()  # a killed finalize
    (tmp_path / ".frames.k1ll3d" / "images.npy").write_bytes(b"partial")
    resumed = EpisodeWriter(tmp_path, FEATURES, fps=10)
    assert resumed.num_episodes == 1
    assert not list((tmp_path / "episodes").glob(".*")) and not list(tmp_path.glob(".frames.*"))
    resumed.add_episode(state, action, "b", images=images)
    assert [e["task"] for e in resumed.episode_index()] == ["a", "b"]
    assert resumed.finalize().num_frames == 8


def test_unfinalized_store_and_mismatched_features_are_clear_errors(tmp_path):
    EpisodeWriter(tmp_path, FEATURES, fps=10)
    with pytest.raises(FileNotFoundError, match="not a finalized"):
        EpisodeStore(tmp_path)
    with pytest.raises(ValueError, match="features"):
        EpisodeWriter(tmp_path, Features(3, 2), fps=10)
    with pytest.raises(ValueError, match="images must be uint8"):
        EpisodeWriter(tmp_path, FEATURES, fps=10).add_episode(*episode(2, 0.0)[:2], "x")


def test_sample_history_and_padded_chunk(tmp_path):
    store = write_store(tmp_path)
    dataset = ChunkDataset(store, n_obs_steps=2, chunk_size=4)
    assert len(dataset) == 8
    first = dataset[0]  # frame 0: the history repeats frame 0
    assert first[OBS_STATE][:, 0].tolist() == [0.0, 0.0]
    assert first[OBS_IMAGE].shape == (2, 1, 3, 8, 8) and first[OBS_IMAGE].dtype == torch.uint8
    assert first[ACTION][:, 0].tolist() == [0.5, 1.5, 2.5, 3.5] and not first[ACTION_IS_PAD].any()
    near_end = dataset[3]  # frame 3 of a 5-frame episode: 2 real actions, then 2 padded repeats
    assert near_end[OBS_STATE][:, 0].tolist() == [2.0, 3.0]
    assert near_end[ACTION][:, 0].tolist() == [3.5, 4.5, 4.5, 4.5]
    assert near_end[ACTION_IS_PAD].tolist() == [False, False, True, True]
    second = dataset[5]  # first frame of episode 1: nothing leaks across the boundary
    assert second[OBS_STATE][:, 0].tolist() == [100.0, 100.0] and second[TASK] == "task 1"


def test_episode_subset(tmp_path):
    dataset = ChunkDataset(write_store(tmp_path), n_obs_steps=1, chunk_size=2, episodes=[1])
    assert len(dataset) == 3 and dataset[0][TASK] == "task 1"


def test_stats_absolute_and_relative_are_cached(tmp_path):
    store = write_store(tmp_path)
    stats = compute_stats(store, relative_actions=False, chunk_size=4)
    np.testing.assert_allclose(stats[ACTION]["min"], [0.5, -101.5])
    relative = compute_stats(store, relative_actions=True, chunk_size=2)
    # action[t + k] - state[t] = k + 0.5 in dim 0 for k in {0, 1}
    np.testing.assert_allclose(relative[ACTION]["min"][0], 0.5)
    np.testing.assert_allclose(relative[ACTION]["max"][0], 1.5)
    assert (store.root / "frames" / "stats.json").is_file()
    again = compute_stats(store, relative_actions=False, chunk_size=4)
    np.testing.assert_allclose(again[ACTION]["max"], stats[ACTION]["max"])


def test_a_second_writer_of_one_dataset_is_refused(tmp_path):
    from core.errors import UserError
    from core.lock import DirectoryLock
    from data.pusht_import import import_pusht_zarr

    with DirectoryLock(tmp_path / "store", "PushT import"):  # as a running importer holds it
        with pytest.raises(UserError, match="is in use by another PushT import"):
            import_pusht_zarr(tmp_path / "source.zarr", tmp_path / "store", state="keypoints", with_images=False)
    with pytest.raises(FileNotFoundError, match="not a zarr directory"):  # released: the import itself runs
        import_pusht_zarr(tmp_path / "source.zarr", tmp_path / "store", state="keypoints", with_images=False)


def test_privileged_state_round_trips_and_reaches_samples_and_statistics(tmp_path):
    writer = EpisodeWriter(tmp_path, FEATURES, fps=10)
    recorded = []
    for i, length in enumerate((4, 3)):
        state, action, images = episode(length, 10.0 * i)
        privileged = np.concatenate([state, np.full((length, 1), float(i))], axis=1)  # (T, 3)
        writer.add_episode(state, action, f"task {i}", images=images, privileged=privileged)
        recorded.append(privileged)
    store = writer.finalize()
    assert store.privileged_dim == 3
    np.testing.assert_array_equal(store.privileged, np.concatenate(recorded))
    sample = ChunkDataset(store, n_obs_steps=2, chunk_size=2)[5]  # episode 1, its frame 1
    np.testing.assert_array_equal(sample[OBS_PRIVILEGED].numpy(), recorded[1][1])
    stats = compute_stats(store, relative_actions=False, chunk_size=2)
    assert stats[OBS_PRIVILEGED]["max"].tolist() == [12.0, 0.0, 1.0]


def test_a_store_without_privileged_state_has_none_and_mixed_stores_are_refused(tmp_path):
    store = write_store(tmp_path / "plain")
    assert store.privileged is None and store.privileged_dim == 0
    assert OBS_PRIVILEGED not in ChunkDataset(store, 1, 2)[0]
    writer = EpisodeWriter(tmp_path / "mixed", FEATURES, fps=10)
    state, action, images = episode(3, 0.0)
    writer.add_episode(state, action, "a", images=images, privileged=state)
    writer.add_episode(state, action, "b", images=images)
    with pytest.raises(ValueError, match="disagree on the privileged state"):
        writer.finalize()
    with pytest.raises(ValueError, match=r"privileged must be \(3, P\)"):
        writer.add_episode(state, action, "c", images=images, privileged=state[:2])


def test_statistics_cached_before_the_store_had_privileged_state_are_recomputed(tmp_path):
    store = write_store(tmp_path, lengths=(3,))
    compute_stats(store, relative_actions=False, chunk_size=2)  # cached without it
    state = np.asarray(store.state)
    np.save(tmp_path / "frames" / "privileged.npy", state)
    stats = compute_stats(EpisodeStore(tmp_path), relative_actions=False, chunk_size=2)
    assert stats[OBS_PRIVILEGED]["min"].tolist() == state.min(0).tolist()


def test_samples_carry_their_episodes_first_images(tmp_path):
    store = write_store(tmp_path)
    sample = ChunkDataset(store, n_obs_steps=1, chunk_size=2)[6]  # episode 1, its frame 1
    np.testing.assert_array_equal(sample[OBS_FIRST_IMAGE].numpy(), store.images[5])
    assert sample[OBS_FIRST_IMAGE].shape == (1, 3, 8, 8)
