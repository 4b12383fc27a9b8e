"""Random batches and statistics of a dataset's shapes: for benchmarks and tests, never for training."""

import torch

from core.keys import ACTION, ACTION_IS_PAD, OBS_FIRST_IMAGE, OBS_IMAGE, OBS_PRIVILEGED, OBS_STATE, TASK
from envs.features import Features

INSTRUCTIONS = ("reach the goal", "push the block to the target")


def synthetic_batch(features: Features, n_obs_steps: int, chunk_size: int, batch_size: int,
                    device: str | torch.device = "cpu", seed: int = 0) -> dict:
    """A training batch with random state, actions in [-1, 1], images (and privileged state, if the
    features have it); in sample 0 the chunk's last
    step is padding (an episode end), and instructions alternate between two."""
    g = torch.Generator().manual_seed(seed)
    t, h = n_obs_steps, chunk_size
    batch = {
        OBS_STATE: torch.randn(batch_size, t, features.state_dim, generator=g),
        ACTION: torch.rand(batch_size, h, features.action_dim, generator=g) * 2 - 1,
        ACTION_IS_PAD: torch.zeros(batch_size, h, dtype=torch.bool),
    }
    batch[ACTION_IS_PAD][0, -1] = True
    if features.has_images:
        shape = (batch_size, t, len(features.cameras), 3, *features.image_size)
        batch[OBS_IMAGE] = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        batch[OBS_FIRST_IMAGE] = torch.randint(0, 256, (batch_size, *shape[2:]), generator=g, dtype=torch.uint8)
    if features.privileged_dim:
        batch[OBS_PRIVILEGED] = torch.rand(batch_size, features.privileged_dim, generator=g) * 2 - 1
    batch = {k: v.to(device) for k, v in batch.items()}
    batch[TASK] = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch_size)]
    return batch


def unit_normalizer_stats(features: Features) -> dict:
    """Normalizer statistics that map [-1, 1] (min-max) and N(0, 1) (mean-std) to themselves."""
    def stats(dim):
        return {"min": -torch.ones(dim), "max": torch.ones(dim), "mean": torch.zeros(dim), "std": torch.ones(dim)}
    result = {OBS_STATE: stats(features.state_dim), ACTION: stats(features.action_dim)}
    if features.privileged_dim:
        result[OBS_PRIVILEGED] = stats(features.privileged_dim)
    return result
