"""Normalizer round trips and refusals; action queue order; ensembling against an offline average."""

import math

import pytest
import torch

from policy.action_queue import ActionQueue, TemporalEnsembler
from policy.normalizer import Normalizer


def fitted(mode: str) -> tuple[Normalizer, torch.Tensor]:
    data = torch.randn(500, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([0.0, 5.0, -2.0])
    data[:, 2] = 7.0  # a constant dimension must not divide by zero
    norm = Normalizer({"action": 3}, {"action": mode})
    norm.fit({"action": {"min": data.min(0).values, "max": data.max(0).values,
                         "mean": data.mean(0), "std": data.std(0)}})
    return norm, data


@pytest.mark.parametrize("mode", ["min_max", "mean_std"])
def test_round_trip(mode):
    norm, data = fitted(mode)
    normalized = norm.normalize("action", data)
    assert torch.isfinite(normalized).all()
    assert torch.allclose(norm.unnormalize("action", normalized), data, atol=1e-4)


def test_min_max_maps_to_unit_range_and_constant_dims_to_zero():
    norm, data = fitted("min_max")
    normalized = norm.normalize("action", data)
    assert torch.allclose(normalized[:, :2].min(0).values, torch.tensor([-1.0, -1.0]), atol=1e-5)
    assert torch.allclose(normalized[:, :2].max(0).values, torch.tensor([1.0, 1.0]), atol=1e-5)
    assert torch.allclose(normalized[:, 2], torch.zeros(500))


def test_unfitted_statistics_raise_instead_of_passing_through():
    norm = Normalizer({"action": 2}, {"action": "min_max"})
    with pytest.raises(RuntimeError, match="never fitted"):
        norm.normalize("action", torch.zeros(1, 2))


def test_unknown_key_raises():
    norm, _ = fitted("min_max")
    with pytest.raises(KeyError, match="observation.state"):
        norm.normalize("observation.state", torch.zeros(1, 3))


def test_fit_with_missing_key_or_wrong_shape_raises():
    norm = Normalizer({"action": 2, "observation.state": 3}, {"action": "min_max", "observation.state": "min_max"})
    stats = {"min": torch.zeros(2), "max": torch.ones(2), "mean": torch.zeros(2), "std": torch.ones(2)}
    with pytest.raises(KeyError, match="observation.state"):
        norm.fit({"action": stats})
    with pytest.raises(ValueError, match="shape"):
        norm.fit({"action": stats, "observation.state": stats})


def test_statistics_live_in_the_state_dict():
    norm, data = fitted("mean_std")
    fresh = Normalizer({"action": 3}, {"action": "mean_std"})
    fresh.load_state_dict(norm.state_dict())
    assert torch.equal(fresh.normalize("action", data), norm.normalize("action", data))


def test_action_queue_pops_in_time_order():
    queue = ActionQueue(n_action_steps=3)
    chunk = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    queue.push(chunk)
    popped = [queue.pop() for _ in range(3)]
    assert queue.empty()
    assert torch.equal(torch.stack(popped, dim=1), chunk[:, :3])


def offline_ensemble(chunks: list[torch.Tensor], step: int, weight) -> torch.Tensor:
    """Direct definition: every chunk predicted at step s <= t (within reach) votes chunk_s[t - s]."""
    horizon = chunks[0].shape[1]
    voters = [(s, chunks[s][:, step - s]) for s in range(step + 1) if step - s < horizon]
    weights = torch.tensor([weight(i, len(voters)) for i in range(len(voters))])
    weights = weights / weights.sum()
    return sum(w * a for w, (_, a) in zip(weights, voters))


def test_act_ensembler_matches_offline_weighted_average():
    horizon, coeff = 4, 0.3
    chunks = [torch.randn(2, horizon, 3) for _ in range(7)]
    ensembler = TemporalEnsembler("act", horizon, coeff=coeff)
    for step, chunk in enumerate(chunks):
        expected = offline_ensemble(chunks, step, lambda i, n: math.exp(-coeff * i))
        assert torch.allclose(ensembler.update(chunk), expected, atol=1e-6)


def test_average_ensembler_uses_only_the_last_k_chunks():
    horizon, k = 5, 2
    chunks = [torch.randn(1, horizon, 2) for _ in range(6)]
    ensembler = TemporalEnsembler("average", horizon, k=k)
    for step, chunk in enumerate(chunks):
        voters = [chunks[s][:, step - s] for s in range(max(0, step - k + 1), step + 1)]
        assert torch.allclose(ensembler.update(chunk), torch.stack(voters).mean(0), atol=1e-6)


def test_ensembler_reset_forgets_old_chunks():
    ensembler = TemporalEnsembler("act", 3)
    ensembler.update(torch.ones(1, 3, 1))
    ensembler.reset()
    fresh = torch.full((1, 3, 1), 5.0)
    assert torch.equal(ensembler.update(fresh), fresh[:, 0])
