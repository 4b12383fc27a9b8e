"""What a policy's inputs and outputs look like; comes from the env or dataset, never typed twice."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Features:
    """Shapes of one observation and one action.

    Attributes:
        state_dim: S, robot state size.
        action_dim: A, action size.
        cameras: camera names, in the order images are stacked; empty for state-only envs.
        image_size: (H, W) of each camera image.
        privileged_dim: P, the simulator state a training loss may predict (``policy.aux_state_weight``);
            0 when none. Set by train.py from the dataset, never a policy input.
    """

    state_dim: int
    action_dim: int
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (0, 0)
    privileged_dim: int = 0

    @property
    def has_images(self) -> bool:
        return len(self.cameras) > 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Features":
        """The inverse of ``to_json`` (JSON turns tuples into lists)."""
        return cls(int(data["state_dim"]), int(data["action_dim"]), tuple(data["cameras"]), tuple(data["image_size"]),
                   int(data.get("privileged_dim", 0)))  # older checkpoints have none
