"""What a policy's inputs and outputs look like; comes from the env or dataset, never typed twice."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Features:
    """Shapes of one observation and one action.

    Attributes:
        state_dim: S, robot state size.
        action_dim: A, action size.
        cameras: camera names, in the order images are stacked; empty for state-only envs.
        image_size: (H, W) of each camera image.
    """

    state_dim: int
    action_dim: int
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (0, 0)

    @property
    def has_images(self) -> bool:
        return len(self.cameras) > 0
