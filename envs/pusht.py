"""PushT (gym-pusht) behind the project's observation dict: state, optional 96x96 image, instruction.

    observation.state   float32 (2,)   agent xy                                    (state="agent_pos")
                        float32 (20,)  agent xy, then the 9 block keypoints (x, y)  (state="keypoints")
    observation.image   uint8 (1, 3, H, W), the "top" camera, only when cameras=("top",)
    action              float32 (2,): absolute target of the agent, pixels in [0, 512]

The keypoints are those of the Diffusion Policy zarr (``data/keypoint``), in the same units
(pixels of the 512x512 world) and order; see ``BLOCK_KEYPOINTS_LOCAL``. gym-pusht's own
"environment_state" keypoints are different (the 8 polygon corners), so they are not used.

Rewards and success follow gym-pusht (and the Diffusion Policy env it was ported from):
coverage is the fraction of the goal T covered by the block; the reward is
``min(coverage / 0.95, 1)``; success (and termination) is coverage > 0.95. The Diffusion Policy
paper's "score" and LeRobot's "avg max reward" are the mean over episodes of the best *reward*,
not of the raw coverage: ``episode_metrics`` reports both.
"""

import os
from typing import Literal

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off-screen; no display needed
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from core.keys import OBS_IMAGE, OBS_STATE  # noqa: E402
from envs.base import BENCHMARKS, Benchmark  # noqa: E402
from envs.config import EnvConfig  # noqa: E402
from envs.features import Features  # noqa: E402

DEFAULT_INSTRUCTION = "push the T-shaped block onto the target"
TASK_NAME = "pusht"
CAMERAS = ("top",)
NATIVE_IMAGE_SIZE = (96, 96)  # the demonstrations' image size
SUCCESS_THRESHOLD = 0.95  # coverage above which gym-pusht reports success and terminates
WORLD_SIZE = 512.0

# The 9 block keypoints in the block's own frame (pixels, relative to the body origin, unrotated).
# Diffusion Policy drew the T with pygame at angle 0, took the drawn pixels, picked 9 of them by
# farthest-point sampling (numpy default_rng(seed=0)) and added uniform(0, 1) jitter. Rerunning that
# procedure on gym-pusht's T reproduces these values to 1e-6, and
# ``rotate(angle) @ local + (block_x, block_y)`` reproduces the zarr's data/keypoint from its
# data/state (median error 1e-5 px over all 25,650 frames; see tests/test_pusht.py).
BLOCK_KEYPOINTS_LOCAL = np.array([
    [9.26978651, 90.04097386],
    [-60.98347195, -1.18673018],
    [60.91275546, -1.39336347],
    [-0.27050367, 25.54362508],
    [-14.06492744, 122.81585387],
    [39.00273833, 32.85740441],
    [-39.9664144, 32.72965538],
    [-16.82434402, 62.86317907],
    [23.54146135, -1.70028786],
])

STATE_VARIANTS = ("agent_pos", "keypoints")
SPLIT_OFFSETS = {"eval": 1000, "val": 100_000, "train": 200_000}  # eval: seeds 1000.. as in BENCHMARKS.md


def block_keypoints(block_pose: np.ndarray) -> np.ndarray:
    """World keypoints of the block.

    Args:
        block_pose: (..., 3) [block_x, block_y, block_angle] (body origin, radians), as in data/state[:, 2:].

    Returns:
        (..., 9, 2) float64 keypoints, as in the zarr's data/keypoint.
    """
    pose = np.asarray(block_pose, dtype=np.float64)
    c, s = np.cos(pose[..., 2:3]), np.sin(pose[..., 2:3])  # (..., 1)
    x, y = BLOCK_KEYPOINTS_LOCAL[:, 0], BLOCK_KEYPOINTS_LOCAL[:, 1]  # (9,)
    return np.stack([c * x - s * y + pose[..., 0:1], s * x + c * y + pose[..., 1:2]], axis=-1)


def episode_metrics(infos: list[dict]) -> dict:
    """Success, best and final coverage of one episode from the infos ``step`` returned.

    Returns:
        success (bool, coverage > 0.95 at some step), max_coverage, final_coverage (raw coverage in
        [0, 1]), max_reward (best ``min(coverage / 0.95, 1)``: the per-episode quantity averaged into
        the Diffusion Policy "score" / LeRobot "avg max reward") and steps.
    """
    if not infos:
        raise ValueError("episode_metrics needs the infos of at least one step")
    coverage = np.array([float(i["coverage"]) for i in infos])
    return {"success": any(bool(i["success"]) for i in infos), "max_coverage": float(coverage.max()),
            "final_coverage": float(coverage[-1]),
            "max_reward": float(np.minimum(coverage / SUCCESS_THRESHOLD, 1.0).max()), "steps": len(infos)}


class PushTEnv(gym.Env):
    """gym-pusht with the project's observation dict, a success flag and an instruction.

    Args:
        state: "agent_pos" (2,) or "keypoints" (20,); see the module docstring.
        cameras: ("top",) for the 96x96 image, () for state only (then nothing is rendered per step).
        image_size: (H, W) of observation images. Other sizes than (96, 96) are resized by gym-pusht
            from its 512x512 drawing, but the demonstrations are 96x96 only.
        max_episode_steps: steps before ``truncated`` (300 in the benchmark).
        instruction: the language instruction a policy receives.
        render_size: side of the square ``render()`` frame used for videos.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, state: Literal["agent_pos", "keypoints"] = "agent_pos", cameras: tuple[str, ...] = ("top",),
                 image_size: tuple[int, int] = NATIVE_IMAGE_SIZE, max_episode_steps: int = 300,
                 instruction: str = DEFAULT_INSTRUCTION, render_size: int = 256):
        if state not in STATE_VARIANTS:
            raise ValueError(f"unknown PushT state variant '{state}'; known: {', '.join(STATE_VARIANTS)}")
        cameras = tuple(cameras)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or len(set(cameras)) != len(cameras):
            raise ValueError(f"PushT has a single camera, 'top'; got cameras {cameras}")
        height, width = (int(v) for v in image_size)
        if cameras and (height < 1 or width < 1):
            raise ValueError(f"image_size must be positive, got {image_size}")
        if max_episode_steps < 1:
            raise ValueError("max_episode_steps must be >= 1")
        self.state_variant = state
        self.cameras = cameras
        self.image_size = (height, width)
        self.max_episode_steps = max_episode_steps
        self.instruction = instruction
        self.task = TASK_NAME
        self.render_mode = "rgb_array"
        self.features = Features(*PushT.state_sizes[state], cameras, self.image_size)
        import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0; imported here, it pulls in pygame)

        # "state" observations do not render; "pixels_agent_pos" renders the 96x96 image each step.
        self._env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos" if cameras else "state",
                             observation_height=height, observation_width=width, visualization_width=render_size,
                             visualization_height=render_size, max_episode_steps=max_episode_steps,
                             disable_env_checker=True)
        self._pusht = self._env.unwrapped
        obs_spaces = {OBS_STATE: spaces.Box(0.0, WORLD_SIZE, (self.features.state_dim,), np.float32)}
        if cameras:
            obs_spaces[OBS_IMAGE] = spaces.Box(0, 255, (len(cameras), 3, height, width), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(0.0, WORLD_SIZE, (2,), np.float32)

    # -- observations -------------------------------------------------------------------------

    def _observation(self, raw) -> dict:
        env = self._pusht
        agent = np.array(env.agent.position, dtype=np.float64)
        if self.state_variant == "keypoints":
            pose = np.array([*env.block.position, env.block.angle])
            state = np.concatenate([agent, block_keypoints(pose).reshape(-1)])
        else:
            state = agent
        obs = {OBS_STATE: state.astype(np.float32)}
        if self.cameras:
            obs[OBS_IMAGE] = np.ascontiguousarray(raw["pixels"].transpose(2, 0, 1)[None])  # (1, 3, H, W)
        return obs

    def coverage(self) -> float:
        """Fraction of the goal T the block covers now, in [0, 1]."""
        return float(self._pusht._get_coverage())

    # -- gym API ------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Random layout from ``seed`` (reproducible), or ``options={"state": state5}`` (see ``set_state``)."""
        super().reset(seed=seed)
        options = dict(options or {})
        state5 = options.pop("state", None)
        raw, info = self._env.reset(seed=seed, options=options or None)
        if state5 is not None:
            raw = self._place(np.asarray(state5, dtype=np.float64))
            info = self._pusht._get_info()  # poses of the placed state, not of the random layout
        info = dict(info, success=False, coverage=self.coverage())
        return self._observation(raw), info

    def set_state(self, state5: np.ndarray) -> dict:
        """Start a new episode at ``[agent_x, agent_y, block_x, block_y, block_angle]`` (a data/state row).

        Unlike gym-pusht's ``reset_to_state`` (which sets the block's position before its angle, so the
        block ends up rotated about its centre of gravity and displaced), the block's body origin lands
        exactly on (block_x, block_y), as it was when the demonstrations were recorded.

        Returns:
            the observation.
        """
        return self.reset(options={"state": state5})[0]

    def _place(self, state5: np.ndarray):
        if state5.shape != (5,):
            raise ValueError(f"a PushT state is [agent_x, agent_y, block_x, block_y, block_angle]; got {state5.shape}")
        env = self._pusht
        # A fresh space: the random layout gym-pusht just stepped leaves cached contacts whose impulses
        # would nudge the block on the next physics step.
        env._setup()
        env.agent.position = state5[:2].tolist()
        env.block.angle = float(state5[4])  # angle first: setting it rotates about the centre of gravity
        env.block.position = state5[2:4].tolist()
        # No physics step (gym-pusht takes one): an agent overlapping the block would push it before
        # the first observation. Reindexing moves the shapes to the new poses for drawing and collisions.
        env.space.reindex_shapes_for_body(env.agent)
        env.space.reindex_shapes_for_body(env.block)
        return env.get_obs()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """One 10 Hz control step toward the target ``action`` (x, y), clipped to [0, 512].

        Returns:
            observation, reward (``min(coverage / 0.95, 1)``), terminated (success), truncated (step cap),
            info with "success" (bool) and "coverage" (float, raw) besides gym-pusht's own keys.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (2,):
            raise ValueError(f"a PushT action is a target (x, y); got shape {np.shape(action)}")
        raw, reward, terminated, truncated, info = self._env.step(np.clip(action, 0.0, WORLD_SIZE))
        info = dict(info, success=bool(info["is_success"]), coverage=float(info["coverage"]))
        return self._observation(raw), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray:
        """(render_size, render_size, 3) uint8 frame with the last action marked, for videos."""
        return self._env.render()

    def close(self) -> None:
        self._env.close()


@BENCHMARKS.register("pusht")
class PushT(Benchmark):
    """PushT from human demonstrations; the headline is the Diffusion Policy score (mean best reward)."""

    name = "pusht"
    fps = 10
    tasks = (TASK_NAME,)
    cameras = CAMERAS
    state_sizes = {"agent_pos": (2, 2), "keypoints": (20, 2)}  # action: target xy in [0, 512]
    privileged_dim = 5  # the dataset's agent xy, block xy and block angle (data.pusht_import)
    headline = "mean_max_reward"
    headline_name = "score"
    train_command = "python train.py --config configs/pusht.yaml"

    def make(self, config: EnvConfig, task: str) -> "PushTEnv":
        return PushTEnv(config.state, tuple(config.cameras), tuple(config.image_size), config.max_episode_steps)

    def episode_seed(self, split: str, index: int) -> int:
        return SPLIT_OFFSETS[split] + index

    def episode_metrics(self, infos: list[dict]) -> dict:
        return episode_metrics(infos)
