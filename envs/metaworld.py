"""Meta-World (Farama ``metaworld`` 3.x, ``*-v3`` tasks) as a gymnasium env with images, state and language.

    from envs.metaworld import MetaWorldEnv, layout_seed
    env = MetaWorldEnv("reach-v3", cameras=("corner", "topview"), image_size=(96, 96))
    obs, info = env.reset(seed=layout_seed("eval", 0))   # the layout is a pure function of the seed
    obs["observation.image"]   # uint8 (2, 3, 96, 96), channels first, upright
    obs["observation.state"]   # float32 (4,): hand xyz + gripper opening ("proprio"; "full": all 39)
    obs, reward, terminated, truncated, info = env.step(env.expert_action())

Success terminates an episode, ``max_episode_steps`` truncates it, actions are clipped to [-1, 1].
The goal is drawn as a magenta sphere in every image unless ``goal_marker=False`` (the stock
scene). ``reset(options={"layout": v})`` starts on a given layout, e.g. one of the benchmark's
pre-drawn MT1 tasks (``MetaWorld.episode_options``). Why and how (seeded layouts and their
disjoint splits, camera orientations, the marker, rendering): docs/metaworld.md.
"""

from __future__ import annotations

import atexit
import functools
import os
import warnings
import weakref
from typing import Any, Literal

if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"  # before mujoco is imported anywhere: it picks its GL backend on import

import gymnasium as gym
import numpy as np

from core.keys import OBS_IMAGE, OBS_STATE
from envs.base import BENCHMARKS, Benchmark
from envs.config import EnvConfig
from envs.features import Features

__all__ = ["CAMERAS", "INSTRUCTIONS", "MetaWorld", "MetaWorldEnv", "instruction", "layout_seed"]

# Seeds of each split: [offset, offset + SEEDS_PER_SPLIT). Ranges never overlap.
SEEDS_PER_SPLIT = 1_000_000
SPLIT_OFFSETS = {"train": 0, "val": SEEDS_PER_SPLIT, "eval": 2 * SEEDS_PER_SPLIT}

# Camera name -> whether MuJoCo's image must be rotated by 180 degrees to be upright. Verified by
# projecting world points: these cameras' "up" axes point downwards (negative world z).
CAMERAS = {
    "corner": True,
    "corner2": True,
    "corner3": True,
    "corner4": True,
    "topview": False,
    "behindGripper": False,
    "gripperPOV": False,
}

GOAL_MARKER_RGBA = (1.0, 0.0, 1.0, 1.0)  # saturated magenta: no object in any task has this colour
GOAL_MARKER_RADIUS = 0.03  # metres; reach's success radius is 0.05
_GOAL_MARKER_EMISSION = 0.5  # part self-lit, so it stays saturated on the shaded side

_PROPRIO_DIM = 4  # hand xyz + gripper opening
_FULL_DIM = 39

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut by its green handle and fit it onto the red peg",
    "basketball-v3": "pick up the basketball and dunk it into the hoop",
    "bin-picking-v3": "pick up the green puck from the red bin and place it in the blue bin at the magenta marker",
    "box-close-v3": "pick up the lid by its handle and put it on the box to close it",
    "button-press-topdown-v3": "press the red button down from the top",
    "button-press-topdown-wall-v3": "reach over the wall and press the red button down from the top",
    "button-press-v3": "press the red button in from the front",
    "button-press-wall-v3": "reach around the wall and press the red button in from the front",
    "coffee-button-v3": "press the button on the front of the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine to the magenta marker",
    "coffee-push-v3": "push the mug under the coffee machine to the magenta marker",
    "dial-turn-v3": "turn the dial half a turn",
    "disassemble-v3": "pick up the nut by its green handle and lift it off the peg",
    "door-close-v3": "push the open door closed",
    "door-lock-v3": "turn the lock on the door down to lock it",
    "door-open-v3": "pull the door open by its handle",
    "door-unlock-v3": "turn the lock on the door up to unlock it",
    "hand-insert-v3": "push the small block into the hole at the magenta marker",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open by its handle",
    "faucet-open-v3": "turn the faucet handle to open the faucet",
    "faucet-close-v3": "turn the faucet handle to close the faucet",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "pick up the green peg and insert it sideways into the hole in the box",
    "pick-place-wall-v3": "pick up the puck, carry it over the wall and place it at the magenta marker",
    "pick-out-of-hole-v3": "pick the puck out of the hole and lift it to the magenta marker",
    "reach-v3": "reach the magenta goal marker with the gripper",
    "push-back-v3": "pull the puck back to the magenta marker",
    "push-v3": "push the puck to the magenta marker",
    "pick-place-v3": "pick up the puck and place it at the magenta marker",
    "plate-slide-v3": "slide the black plate into the net at the magenta marker",
    "plate-slide-side-v3": "slide the black plate sideways into the net at the magenta marker",
    "plate-slide-back-v3": "slide the black plate back out of the net to the magenta marker",
    "plate-slide-back-side-v3": "slide the black plate sideways out of the net to the magenta marker",
    "peg-unplug-side-v3": "pull the peg sideways out of its socket",
    "soccer-v3": "push the soccer ball into the goal at the magenta marker",
    "stick-push-v3": "pick up the blue stick and use it to push the thermos to the magenta marker",
    "stick-pull-v3": "pick up the blue stick and use it to pull the thermos to the magenta marker",
    "push-wall-v3": "push the puck around the wall to the magenta marker",
    "reach-wall-v3": "reach over the wall to the magenta goal marker with the gripper",
    "shelf-place-v3": "pick up the blue block and place it on the shelf at the magenta marker",
    "sweep-into-v3": "sweep the small block into the hole at the magenta marker",
    "sweep-v3": "sweep the small block off the edge of the table at the magenta marker",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}


def instruction(task: str, goal_marker: bool = True) -> str:
    """The task's instruction; without the marker (the stock scene) it names no magenta marker."""
    text = INSTRUCTIONS[task]
    if goal_marker:
        return text
    return (text.replace("the magenta goal marker", "the goal").replace(" at the magenta marker", " at the target")
            .replace("the magenta marker", "the target"))


def layout_seed(split: Literal["train", "val", "eval"], index: int) -> int:
    """Seed of layout ``index`` of ``split``; the splits' seed ranges never overlap.

    Args:
        split: ``train`` (demonstrations), ``val`` (checkpoint selection) or ``eval`` (reported numbers).
        index: in ``[0, 1_000_000)``.
    """
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_OFFSETS)}")
    if not 0 <= int(index) < SEEDS_PER_SPLIT:
        raise ValueError(f"layout index {index} is outside [0, {SEEDS_PER_SPLIT})")
    return SPLIT_OFFSETS[split] + int(index)


# Renderers still open at interpreter exit are freed by an exit hook while EGL is still alive;
# otherwise their finalizers run after MuJoCo's own exit hook has terminated EGL, and print
# harmless but noisy tracebacks. Exit hooks run last-registered first, so ours is registered
# right after the first renderer (whose creation registers MuJoCo's).
_LIVE_ENVS: weakref.WeakSet[MetaWorldEnv] = weakref.WeakSet()
_exit_hook_registered = False


def _close_live_envs() -> None:
    for env in list(_LIVE_ENVS):
        env.close()


def _new_renderer(model, height: int, width: int):
    global _exit_hook_registered
    import mujoco

    renderer = mujoco.Renderer(model, height, width)
    if not _exit_hook_registered:
        atexit.register(_close_live_envs)
        _exit_hook_registered = True
    return renderer


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task with language, images from chosen cameras and a configurable step cap.

    Observations (keys from ``core.keys``):
        ``observation.state``: float32 ``(4,)`` for ``proprio``, ``(39,)`` for ``full``.
        ``observation.image``: uint8 ``(N_cam, 3, H, W)``, present only when ``cameras`` is not empty.
    Actions: float32 ``(4,)`` in ``[-1, 1]``: hand displacement xyz (scaled by 1 cm) and gripper effort.

    Attributes:
        task: the Meta-World task name, e.g. ``reach-v3``.
        instruction: the task's language instruction (``instruction(task, goal_marker)``).
        features: state/action sizes, cameras and image size (``envs.features.Features``).
        mw_env: the underlying Meta-World env (MuJoCo ``model``/``data`` live there).

    Besides the gym API (``reset``, ``step``, ``render``, ``close``): ``expert_action()``, the
    scripted expert's action for the current observation; ``goal``, the goal position (where the
    marker is drawn); ``layout``, the episode's random object/goal vector (to record or compare layouts).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, task: str, cameras: tuple[str, ...] = ("corner",), image_size: tuple[int, int] = (96, 96),
                 state: Literal["proprio", "full"] = "proprio", max_episode_steps: int = 500,
                 goal_marker: bool = True):
        if task not in INSTRUCTIONS:
            raise ValueError(f"unknown Meta-World task {task!r}; valid: {', '.join(sorted(INSTRUCTIONS))}")
        cameras = _known_cameras(cameras)
        if state not in ("proprio", "full"):
            raise ValueError(f"unknown state variant {state!r}; use 'proprio' or 'full'")
        height, width = (int(s) for s in image_size)
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be positive (H, W), got {tuple(image_size)}")
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")

        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.policies import ENV_POLICY_MAP

        self.task = task
        self.goal_marker = bool(goal_marker)
        self.instruction = instruction(task, self.goal_marker)
        self.cameras = cameras
        self.image_size = (height, width)
        self.state = state
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = "rgb_array"

        # What Meta-World's goal-observable classes do in __init__, without their reset (which would
        # draw from the global np.random), plus seeded layouts: rand_vec comes from env.np_random.
        env = ALL_V3_ENVIRONMENTS[task]()
        env._partially_observable = False  # obs[36:39] holds the goal; the expert needs it
        del env.sawyer_observation_space  # a cached property computed for the partially observable case
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        # Meta-World raises once its path length reaches max_path_length (500); our cap is the limit.
        env.max_path_length = self.max_episode_steps
        self.mw_env = env
        self._expert = ENV_POLICY_MAP[task]()

        model = env.model
        model.vis.quality.offsamples = 0  # no multisample anti-aliasing
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        self._renderer = None  # created on first use; one renderer serves every camera

        state_dim = _PROPRIO_DIM if state == "proprio" else _FULL_DIM
        full_space = env.sawyer_observation_space
        spaces = {OBS_STATE: gym.spaces.Box(full_space.low[:state_dim].astype(np.float32),
                                            full_space.high[:state_dim].astype(np.float32), dtype=np.float32)}
        if cameras:
            spaces[OBS_IMAGE] = gym.spaces.Box(0, 255, (len(cameras), 3, height, width), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        self.features = Features(state_dim, 4, cameras, (height, width))

        self._raw_obs: np.ndarray | None = None  # latest 39-d Meta-World observation
        self._images: np.ndarray | None = None  # latest (N_cam, 3, H, W)
        self._steps = 0
        _LIVE_ENVS.add(self)

    # ----------------------------------------------------------------------------------- gym API

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode; with ``seed``, on that seed's layout (see :func:`layout_seed`).

        ``options={"layout": v}`` starts on the layout ``v`` instead (a ``layout`` vector, e.g. one of
        Meta-World's pre-drawn benchmark tasks); the seed still seeds everything else.
        """
        import mujoco

        super().reset(seed=seed)
        options = dict(options or {})
        layout = options.pop("layout", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; known: layout")
        if seed is not None:
            self.mw_env.seed(int(seed))
        if layout is not None:  # Meta-World's own switch for a fixed task: reset reads _last_rand_vec
            self.mw_env._last_rand_vec = np.asarray(layout, dtype=np.float64)
            self.mw_env._freeze_rand_vec = True
        try:
            raw, _ = self.mw_env.reset()
        finally:
            self.mw_env._freeze_rand_vec = False
        # Meta-World moves the goal site after its last forward pass; recompute positions so the
        # first frame shows the scene as every later step does (same for image and state-only envs).
        mujoco.mj_forward(self.mw_env.model, self.mw_env.data)
        self._raw_obs = raw
        self._steps = 0
        return self._observation(), {"success": False}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Apply one action (clipped to [-1, 1]).

        Returns:
            (obs, reward, terminated, truncated, info): terminated on success, truncated at the
            step cap; info is Meta-World's, with ``success`` as a bool.
        """
        if self._raw_obs is None:
            raise RuntimeError("call reset() before step()")
        if self._steps >= self.max_episode_steps:
            raise RuntimeError(f"the episode hit its cap of {self.max_episode_steps} steps; call reset()")
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        raw, reward, _, _, info = self.mw_env.step(action)
        self._raw_obs = raw
        self._steps += 1
        success = bool(info["success"])
        info = {**info, "success": success}
        truncated = self._steps >= self.max_episode_steps and not success
        return self._observation(), float(reward), success, truncated, info

    def render(self) -> np.ndarray:
        """The current frame for videos: uint8 ``(H, W * N_cam, 3)``, cameras side by side, upright.

        A state-only env renders the ``corner`` camera.
        """
        if self._raw_obs is None:
            raise RuntimeError("call reset() before render()")
        images = self._images if self.cameras else self._render_images(("corner",))
        return np.concatenate(list(images.transpose(0, 2, 3, 1)), axis=1)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if getattr(self, "mw_env", None) is not None:
            self.mw_env.close()
        _LIVE_ENVS.discard(self)

    # ----------------------------------------------------------------------------------- extras

    def expert_action(self) -> np.ndarray:
        """Meta-World's scripted expert for this task on the current observation: float32 ``(4,)``."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() before expert_action()")
        with warnings.catch_warnings():  # the experts' gains trip a "may be too high" warning every step
            warnings.simplefilter("ignore")
            action = self._expert.get_action(self._raw_obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def goal_pixels(self, cameras: tuple[str, ...] | None = None) -> dict[str, int]:
        """How many pixels of each camera's image show the goal now: those that change when the goal
        is not drawn (neither the marker nor Meta-World's own goal site). 0 means the goal is out of
        view or hidden behind the arm. ``cameras`` defaults to this env's (``corner`` if it has none).
        """
        import mujoco

        if self._raw_obs is None:
            raise RuntimeError("call reset() before goal_pixels()")
        cameras = _known_cameras(cameras or self.cameras or ("corner",))
        model = self.mw_env.model
        site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
        if site < 0 and not self.goal_marker:
            raise ValueError(f"{self.task} has no goal site to measure")
        shown = self._render_images(cameras)
        alpha, marker = (float(model.site_rgba[site, 3]) if site >= 0 else None), self.goal_marker
        try:
            if site >= 0:
                model.site_rgba[site, 3] = 0.0
            self.goal_marker = False
            hidden = self._render_images(cameras)
        finally:
            if site >= 0:
                model.site_rgba[site, 3] = alpha
            self.goal_marker = marker
        changed = (shown != hidden).any(axis=1)  # (N, H, W)
        return {camera: int(changed[i].sum()) for i, camera in enumerate(cameras)}

    @property
    def layout(self) -> np.ndarray:
        """This episode's layout: Meta-World's random vector (object and goal positions; length depends on the task)."""
        if self.mw_env._last_rand_vec is None:
            raise RuntimeError("call reset() first")
        return np.array(self.mw_env._last_rand_vec, dtype=np.float64)

    @property
    def privileged_state(self) -> np.ndarray:
        """float32 (39,): the full Meta-World observation (hand, objects, previous frame, goal), whatever
        ``state`` the policy sees; recorded with demonstrations as a training target, never an input."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() first")
        return np.array(self._raw_obs[:_FULL_DIM], dtype=np.float32)

    @property
    def goal(self) -> np.ndarray:
        """Goal position (x, y, z) in metres: where the marker is drawn, obs[36:39] of the full state."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() first")
        return np.array(self._raw_obs[36:39], dtype=np.float64)

    # ----------------------------------------------------------------------------------- internals

    def _observation(self) -> dict:
        state_dim = _PROPRIO_DIM if self.state == "proprio" else _FULL_DIM
        obs = {OBS_STATE: self._raw_obs[:state_dim].astype(np.float32)}
        if self.cameras:
            self._images = self._render_images(self.cameras)
            obs[OBS_IMAGE] = self._images
        return obs

    def _render_images(self, cameras: tuple[str, ...]) -> np.ndarray:
        """Upright images of ``cameras``, with the goal marker if on: uint8 ``(N, 3, H, W)``."""
        if self._renderer is None:
            self._renderer = _new_renderer(self.mw_env.model, *self.image_size)
        renderer, data = self._renderer, self.mw_env.data
        goal = self.goal
        images = []
        for camera in cameras:
            renderer.update_scene(data, camera=camera)
            if self.goal_marker:
                _add_marker(renderer.scene, goal)
            image = renderer.render()  # (H, W, 3), row 0 = top of MuJoCo's camera frame
            if CAMERAS[camera]:
                image = image[::-1, ::-1]
            images.append(image.transpose(2, 0, 1))
        return np.ascontiguousarray(np.stack(images))


def _known_cameras(cameras) -> tuple[str, ...]:
    """``cameras`` as a tuple, or a ValueError that names the unknown ones and the valid ones."""
    cameras = tuple(cameras)
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise ValueError(f"unknown camera(s) {', '.join(map(repr, unknown))}; valid: {', '.join(CAMERAS)}")
    return cameras


def _add_marker(scene, position: np.ndarray) -> None:
    """Append the goal sphere to a MuJoCo scene (after ``update_scene``, before ``render``)."""
    import mujoco

    if scene.ngeom >= scene.maxgeom:
        return
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_SPHERE, np.array([GOAL_MARKER_RADIUS, 0.0, 0.0]),
                        np.asarray(position, dtype=np.float64), np.eye(3).ravel(),
                        np.array(GOAL_MARKER_RGBA, dtype=np.float32))
    geom.emission = _GOAL_MARKER_EMISSION
    scene.ngeom += 1


@BENCHMARKS.register("metaworld")
class MetaWorld(Benchmark):
    """Meta-World v3 manipulation tasks, scripted-expert demonstrations, success rate on fresh layouts."""

    name = "metaworld"
    fps = 80  # MuJoCo steps at 80 Hz under Meta-World's frame skip
    tasks = tuple(INSTRUCTIONS)
    cameras = tuple(CAMERAS)
    state_sizes = {"proprio": (_PROPRIO_DIM, 4), "full": (_FULL_DIM, 4)}  # action: hand delta xyz + gripper
    privileged_dim = _FULL_DIM  # MetaWorldEnv.privileged_state: the full observation, goal included
    headline = "success_rate"
    headline_name = "success"
    train_command = "python train.py --config configs/metaworld_reach.yaml"
    # seeds: fresh layouts from disjoint seed ranges (as many as wanted); metaworld: the benchmark's own
    # 50 pre-drawn layouts per task (metaworld.MT1(task, seed=0)), as published MT1/MT10 numbers use.
    protocols = ("seeds", "metaworld")
    MT_SEED = 0

    def make(self, config: EnvConfig, task: str) -> MetaWorldEnv:
        return MetaWorldEnv(task, tuple(config.cameras), tuple(config.image_size), config.state,
                            config.max_episode_steps, config.goal_marker)

    def episode_options(self, protocol: str, task: str, index: int) -> dict | None:
        if protocol == "seeds":
            return None
        return {"layout": _benchmark_layouts(task, self.MT_SEED)[index % 50]}

    def episode_seed(self, split: str, index: int) -> int:
        return layout_seed(split, index)


@functools.cache
def _benchmark_layouts(task: str, seed: int) -> tuple[np.ndarray, ...]:
    """The 50 layouts ``metaworld.MT1(task, seed)`` pre-draws (its train tasks), in order."""
    import pickle

    import metaworld

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = metaworld.MT1(task, seed=seed).train_tasks
    # Meta-World's own Task records, made just above in this process (not a file): pickle is its format.
    return tuple(np.asarray(pickle.loads(t.data)["rand_vec"], dtype=np.float64) for t in tasks)
