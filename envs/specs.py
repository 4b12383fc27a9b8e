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


def check_env_config(config: EnvConfig) -> None:
    """Refuse, at load time, names the benchmark does not have (tasks, cameras, state variant)."""
    if config.name == "pusht":
        from envs.pusht import CAMERAS, STATE_VARIANTS, TASK_NAME

        tasks, cameras, states = (TASK_NAME,), CAMERAS, STATE_VARIANTS
    elif config.name == "metaworld":
        from envs.metaworld import CAMERAS, INSTRUCTIONS

        tasks, cameras, states = tuple(INSTRUCTIONS), tuple(CAMERAS), ("proprio", "full")
    else:
        raise ConfigError(f"env.name: unknown benchmark '{config.name}'; known: metaworld, pusht")
    unknown = [t for t in config.tasks if t not in tasks]
    if unknown:
        shown = ", ".join(tasks) if len(tasks) < 10 else f"{len(tasks)} tasks, e.g. {', '.join(tasks[:5])}"
        raise ConfigError(f"env.tasks: {unknown} not among the {config.name} tasks ({shown})")
    if len(set(config.tasks)) != len(config.tasks):
        raise ConfigError(f"env.tasks lists a task twice: {config.tasks}")
    unknown = [c for c in config.cameras if c not in cameras]
    if unknown or len(set(config.cameras)) != len(config.cameras):
        raise ConfigError(f"env.cameras: {list(config.cameras)} is not a list of distinct {config.name} cameras "
                          f"({', '.join(cameras)}; empty for state only)")
    if config.state not in states:
        raise ConfigError(f"env.state: '{config.state}' is not a {config.name} state variant ({', '.join(states)})")


def features_for(config: EnvConfig) -> Features:
    """Features of the env a config describes."""
    key = (config.name, config.state)
    if key not in _SIZES:
        known = ", ".join(f"{e}/{s}" for e, s in _SIZES)
        raise ConfigError(f"unknown env/state combination {config.name}/{config.state}; known: {known}")
    state_dim, action_dim = _SIZES[key]
    return Features(state_dim, action_dim, tuple(config.cameras), tuple(config.image_size))
