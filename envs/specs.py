"""State and action sizes of each benchmark, so shapes are known without starting a simulator."""

from core.configuration import ConfigError
from envs.config import EnvConfig
from envs.features import Features

# (env name, state variant) -> (state_dim, action_dim)
_SIZES = {
    ("metaworld", "proprio"): (4, 4),  # hand xyz + gripper opening; action: hand delta xyz + gripper
    ("metaworld", "full"): (39, 4),  # includes object and goal positions: an explicit ablation only
    ("pusht", "agent_pos"): (2, 2),  # agent xy; action: target xy in [0, 512]
    ("pusht", "keypoints"): (20, 2),  # agent xy + 9 block keypoints (x, y)
}


def features_for(config: EnvConfig) -> Features:
    """Features of the env a config describes."""
    key = (config.name, config.state)
    if key not in _SIZES:
        known = ", ".join(f"{e}/{s}" for e, s in _SIZES)
        raise ConfigError(f"unknown env/state combination {config.name}/{config.state}; known: {known}")
    state_dim, action_dim = _SIZES[key]
    return Features(state_dim, action_dim, tuple(config.cameras), tuple(config.image_size))
