"""Meta-World wrapper: image orientation, shapes, layout seeding, instructions, expert, step cap."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("metaworld")

from core.keys import OBS_IMAGE, OBS_STATE  # noqa: E402
from envs.metaworld import CAMERAS, INSTRUCTIONS, MetaWorldEnv, layout_seed  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def image_env():
    env = MetaWorldEnv("reach-v3", cameras=("corner", "topview"), image_size=(SIZE, SIZE))
    yield env
    env.close()


@pytest.fixture(scope="module")
def state_env():
    env = MetaWorldEnv("reach-v3", cameras=(), state="full")
    yield env
    env.close()


def _marker_centroid(image: np.ndarray) -> np.ndarray:
    """(row, col) centre of the magenta goal marker's pixels in a (3, H, W) image."""
    r, g, b = image.astype(int)
    rows, cols = np.nonzero((r > 150) & (b > 150) & (g < 100))
    assert rows.size >= 3, "goal marker not visible"
    return np.array([rows.mean(), cols.mean()]) + 0.5


def _project(env: MetaWorldEnv, camera: str, point: np.ndarray) -> np.ndarray:
    """(row, col) of a world point in MuJoCo's raw render of ``camera`` (pinhole model)."""
    model, data = env.mw_env.model, env.mw_env.data
    i = model.camera(camera).id
    axes = data.cam_xmat[i].reshape(3, 3)  # columns: camera x (image right), y (image up), z (backwards)
    v = axes.T @ (point - data.cam_xpos[i])
    f = (SIZE / 2) / np.tan(np.deg2rad(model.cam_fovy[i]) / 2)
    return np.array([SIZE / 2 - f * v[1] / -v[2], SIZE / 2 + f * v[0] / -v[2]])


def _upright(env: MetaWorldEnv, camera: str, point: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Where ``point`` must appear in an upright image: the raw projection, rotated by 180 degrees
    if the world direction ``up`` goes down the raw image. Rotation keeps handedness (no mirror)."""
    raw = _project(env, camera, point)
    goes_down = _project(env, camera, point + 0.05 * up)[0] > raw[0]
    return np.array([SIZE, SIZE]) - raw if goes_down else raw


@pytest.mark.parametrize("camera, up", [("corner", (0, 0, 1)),  # world up is image up
                                        ("topview", (0, 1, 0))])  # looking down: far side (+y) at the top
def test_images_are_upright_and_not_mirrored(image_env, camera, up):
    k = image_env.cameras.index(camera)
    discriminated = False
    for seed in range(8):
        obs, _ = image_env.reset(seed=seed)
        goal = image_env.goal
        found = _marker_centroid(obs[OBS_IMAGE][k])
        expected = _upright(image_env, camera, goal, np.array(up, dtype=float))
        assert np.abs(found - expected).max() < 1.5, (seed, found, expected)
        # would a wrong fix (none, or a flip along one axis only, i.e. a mirror) have failed here?
        raw = _project(image_env, camera, goal)
        wrong = [raw, np.array([SIZE - raw[0], raw[1]]), np.array([raw[0], SIZE - raw[1]]), SIZE - raw]
        wrong = [w for w in wrong if np.abs(w - expected).max() > 1e-6]
        discriminated |= all(np.abs(w - expected).max() > 4 for w in wrong)
    assert discriminated
    assert CAMERAS[camera] == (camera == "corner")


def test_table_is_at_the_bottom_of_the_corner_image(image_env):
    """The corner camera looks down at the table from above its edge: upright, the wood is low in the image."""
    obs, _ = image_env.reset(seed=0)
    r, g, b = obs[OBS_IMAGE][image_env.cameras.index("corner")].astype(int)
    wood = (r > g + 10) & (g > b + 10) & (g > 0.55 * r) & (r > 60)  # brown, not the red arm
    assert wood.sum() > 0.1 * SIZE * SIZE
    assert np.nonzero(wood)[0].mean() > 0.6 * SIZE


def test_camera_table_matches_model(state_env):
    model = state_env.mw_env.model
    assert {model.camera(i).name for i in range(model.ncam)} == set(CAMERAS)


def test_shapes_and_dtypes(image_env, state_env):
    obs, _ = image_env.reset(seed=0)
    assert obs[OBS_STATE].shape == (4,) and obs[OBS_STATE].dtype == np.float32
    assert obs[OBS_IMAGE].shape == (2, 3, SIZE, SIZE) and obs[OBS_IMAGE].dtype == np.uint8
    assert image_env.observation_space.contains(obs)
    assert image_env.render().shape == (SIZE, 2 * SIZE, 3)
    obs, _, _, _, _ = image_env.step(np.zeros(4))
    assert image_env.observation_space.contains(obs)

    obs, _ = state_env.reset(seed=0)
    assert set(obs) == {OBS_STATE}
    assert obs[OBS_STATE].shape == (39,) and obs[OBS_STATE].dtype == np.float32
    np.testing.assert_allclose(obs[OBS_STATE][36:39], state_env.goal, atol=1e-6)
    assert state_env.action_space.shape == (4,)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="reach-v3"):
        MetaWorldEnv("reach-v9", cameras=())
    with pytest.raises(ValueError, match="topview"):
        MetaWorldEnv("reach-v3", cameras=("side",))
    with pytest.raises(ValueError):
        layout_seed("test", 0)
    with pytest.raises(ValueError):
        layout_seed("eval", 1_000_000)


def test_same_seed_same_layout_different_seeds_differ(state_env):
    first, _ = state_env.reset(seed=123)
    layout, goal = state_env.layout, state_env.goal
    state_env.step(np.ones(4))
    state_env.reset(seed=7)
    assert not np.allclose(state_env.goal, goal)
    again, _ = state_env.reset(seed=123)
    np.testing.assert_array_equal(state_env.layout, layout)
    np.testing.assert_array_equal(again[OBS_STATE], first[OBS_STATE])


def test_splits_have_disjoint_layouts(state_env):
    goals = {}
    for split in ("train", "val", "eval"):
        goals[split] = []
        for i in range(20):
            state_env.reset(seed=layout_seed(split, i))
            goals[split].append(state_env.goal)
    assert layout_seed("train", 0) == 0 and layout_seed("val", 0) == 1_000_000 and layout_seed("eval", 5) == 2_000_005
    all_goals = np.concatenate([np.stack(g) for g in goals.values()])  # (60, 3)
    distances = np.linalg.norm(all_goals[:, None] - all_goals[None], axis=-1) + np.eye(len(all_goals))
    assert distances.min() > 1e-6


def test_instructions_cover_every_v3_task():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    assert len(INSTRUCTIONS) == 50
    assert set(INSTRUCTIONS) == set(ALL_V3_ENVIRONMENTS) == set(ENV_POLICY_MAP)
    assert all(len(text.split()) >= 3 for text in INSTRUCTIONS.values())


@pytest.mark.parametrize("task", ["push-v3", "drawer-open-v3", "assembly-v3"])
def test_other_tasks_construct_and_step(task):
    env = MetaWorldEnv(task, cameras=())
    obs, _ = env.reset(seed=0)
    obs, _, _, _, info = env.step(env.expert_action())
    assert env.instruction == INSTRUCTIONS[task] and env.task == task
    assert obs[OBS_STATE].shape == (4,) and isinstance(info["success"], bool)
    env.close()


def test_expert_succeeds_and_success_terminates(state_env):
    for i in range(3):
        state_env.reset(seed=layout_seed("eval", i))
        for step in range(state_env.max_episode_steps):
            action = state_env.expert_action()
            assert action.shape == (4,) and action.dtype == np.float32 and np.abs(action).max() <= 1
            _, _, terminated, truncated, info = state_env.step(action)
            if terminated or truncated:
                break
        assert terminated and info["success"] is True and not truncated, f"expert failed on eval layout {i}"
        assert step < 200


def test_step_cap_truncates_and_clips_actions():
    env = MetaWorldEnv("reach-v3", cameras=(), max_episode_steps=5)
    env.reset(seed=0)
    for step in range(5):
        _, _, terminated, truncated, info = env.step(np.full(4, 10.0))  # out of range: clipped, not rejected
        assert not terminated and info["success"] is False
        assert truncated == (step == 4)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4))
    env.close()


def test_cap_above_metaworld_path_length():
    env = MetaWorldEnv("reach-v3", cameras=(), max_episode_steps=503)
    env.reset(seed=0)
    for step in range(503):
        _, _, _, truncated, _ = env.step(np.array([0.0, 0.0, 1.0, 0.0]))  # up, away from any goal
    assert truncated
    env.close()


def _magenta_pixels(image: np.ndarray) -> int:
    r, g, b = image.astype(int)
    return int(((r > 150) & (b > 150) & (g < 100)).sum())


def test_goal_marker_is_drawn_only_when_on():
    """The stock scene (goal_marker=False) has no magenta pixel on the same layouts; the marker scene has some."""
    stock = MetaWorldEnv("reach-v3", cameras=("corner", "topview"), image_size=(SIZE, SIZE), goal_marker=False)
    marked = MetaWorldEnv("reach-v3", cameras=("corner", "topview"), image_size=(SIZE, SIZE))
    try:
        for i in range(3):
            seed = layout_seed("eval", i)
            with_marker = marked.reset(seed=seed)[0][OBS_IMAGE]
            without = stock.reset(seed=seed)[0][OBS_IMAGE]
            assert np.allclose(marked.layout, stock.layout)
            assert all(_magenta_pixels(image) >= 3 for image in with_marker)
            assert all(_magenta_pixels(image) == 0 for image in without)
        assert "magenta" in marked.instruction and "magenta" not in stock.instruction
    finally:
        stock.close()
        marked.close()


def test_goal_pixels_counts_the_drawn_goal_and_leaves_the_scene_as_it_was():
    """The marker covers at least its magenta pixels; the stock site is seen but smaller; rendering after
    the measurement gives the same images as before it (the site and marker are restored)."""
    stock = MetaWorldEnv("reach-v3", cameras=("corner", "topview"), image_size=(SIZE, SIZE), goal_marker=False)
    marked = MetaWorldEnv("reach-v3", cameras=("corner", "topview"), image_size=(SIZE, SIZE))
    try:
        seed = layout_seed("eval", 0)
        marked_images = marked.reset(seed=seed)[0][OBS_IMAGE]
        stock_images = stock.reset(seed=seed)[0][OBS_IMAGE]
        marked_px, stock_px = marked.goal_pixels(), stock.goal_pixels()
        assert set(marked_px) == set(stock_px) == {"corner", "topview"}
        for i, camera in enumerate(("corner", "topview")):
            assert marked_px[camera] >= _magenta_pixels(marked_images[i]) >= 3
            assert 0 < stock_px[camera] < marked_px[camera]
        np.testing.assert_array_equal(stock._render_images(stock.cameras), stock_images)
        np.testing.assert_array_equal(marked._render_images(marked.cameras), marked_images)
        assert set(stock.goal_pixels(("gripperPOV",))) == {"gripperPOV"}
        with pytest.raises(ValueError, match="unknown camera"):
            stock.goal_pixels(("nope",))
    finally:
        stock.close()
        marked.close()


def test_stock_instructions_name_no_marker():
    from envs.metaworld import instruction

    for task in INSTRUCTIONS:
        assert "magenta" not in instruction(task, goal_marker=False) and "marker" not in instruction(task, False)
        assert instruction(task, goal_marker=True) == INSTRUCTIONS[task]


def test_the_metaworld_protocol_uses_the_benchmarks_own_layouts(state_env):
    """Episode i starts on MT1's i-th pre-drawn layout, whatever the seed; the seed protocol is untouched."""
    import pickle

    import metaworld

    from envs.metaworld import MetaWorld

    spec = MetaWorld()
    expected = [pickle.loads(t.data)["rand_vec"] for t in metaworld.MT1("reach-v3", seed=MetaWorld.MT_SEED).train_tasks]
    assert len(expected) == 50 and len({tuple(v) for v in expected}) == 50
    for index, seed in [(0, 7), (3, 7), (49, 123)]:
        state_env.reset(seed=seed, options=spec.episode_options("metaworld", "reach-v3", index))
        assert np.allclose(state_env.layout, expected[index])
        assert np.allclose(state_env.goal, expected[index][3:6])  # reach's layout: hand init, then goal
    assert spec.episode_options("seeds", "reach-v3", 0) is None
    state_env.reset(seed=layout_seed("eval", 0))  # a fixed layout does not stick to later resets
    first = state_env.layout
    state_env.reset(seed=layout_seed("eval", 1))
    assert not np.allclose(first, state_env.layout)
    with pytest.raises(ValueError, match="unknown reset options"):
        state_env.reset(seed=0, options={"layuot": expected[0]})
