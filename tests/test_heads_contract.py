"""Contract tests that every registered action head must pass."""

import pytest
import torch

from action_head import HEADS, build_head, head_config_class
from core.configuration import from_dict
from fusion.context import Context

B, Q, N, D, H, A = 4, 1, 5, 32, 4, 3
# Narrow networks keep the suite fast; the contract does not depend on width.
SMALL = {"diffusion": {"down_dims": [32, 64]}, "flow": {"down_dims": [32, 64]},
         "autoregressive": {"n_layers": 1}, "regression": {"hidden": 64}}


def make_head(name: str, **options) -> torch.nn.Module:
    config = from_dict(head_config_class(name), {"type": name, **SMALL.get(name, {}), **options})
    torch.manual_seed(0)
    return build_head(config, d_model=D, n_queries=Q, chunk_size=H, action_dim=A)


def make_context(batch: int = B, seed: int = 0, requires_grad: bool = False) -> Context:
    g = torch.Generator().manual_seed(seed)
    pad = torch.zeros(batch, N, dtype=torch.bool)
    pad[0, -2:] = True
    return Context(query=torch.randn(batch, Q, D, generator=g).requires_grad_(requires_grad),
                   scene=torch.randn(batch, N, D, generator=g), scene_pad_mask=pad)


def test_all_heads_registered():
    assert {"diffusion", "autoregressive", "regression", "flow"} <= set(HEADS.names())


@pytest.mark.parametrize("name", HEADS.names())
def test_predict_shape_and_range(name):
    head = make_head(name).eval()
    actions = head.predict(make_context(), torch.Generator().manual_seed(0))
    assert actions.shape == (B, H, A)
    assert actions.dtype == torch.float32
    assert torch.isfinite(actions).all() and actions.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("name", HEADS.names())
def test_loss_is_finite_scalar_with_metrics(name):
    head = make_head(name).train()
    actions = torch.rand(B, H, A) * 2 - 1
    pad = torch.zeros(B, H, dtype=torch.bool)
    pad[1, -1] = True
    loss, metrics = head.loss(make_context(), actions, pad)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert metrics and all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("name", HEADS.names())
def test_gradients_reach_every_parameter_and_the_context(name):
    options = {"input_mask_prob": 0.5} if name == "autoregressive" else {}  # the MASK embedding needs masking
    head = make_head(name, **options).train()
    context = make_context(requires_grad=True)
    torch.manual_seed(1)
    loss, _ = head.loss(context, torch.rand(B, H, A) * 2 - 1, torch.zeros(B, H, dtype=torch.bool))
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, f"no gradient reached: {missing}"
    assert context.query.grad is not None and context.query.grad.abs().sum() > 0


@pytest.mark.parametrize("name", HEADS.names())
def test_same_generator_same_output(name):
    head = make_head(name, **({"temperature": 1.0} if name == "autoregressive" else {})).eval()
    context = make_context()
    first = head.predict(context, torch.Generator().manual_seed(7))
    second = head.predict(context, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", HEADS.names())
@pytest.mark.parametrize("steps", [1, 3])
def test_prefix_is_the_chunk_start(name, steps):
    """What select_action executes between re-plans: exactly the first steps of the sampled chunk."""
    head = make_head(name, **({"temperature": 1.0} if name == "autoregressive" else {})).eval()
    context = make_context()
    chunk = head.predict(context, torch.Generator().manual_seed(7))
    prefix = head.predict_prefix(context, steps, torch.Generator().manual_seed(7))
    assert torch.equal(prefix, chunk[:, :steps])
    for bad in (0, H + 1):
        with pytest.raises(ValueError, match="steps must be in"):
            head.predict_prefix(context, bad)


@pytest.mark.parametrize("name", HEADS.names())
def test_padded_steps_do_not_change_the_loss(name):
    head = make_head(name).eval()  # eval: no dropout, so the loss is a function of the inputs and the RNG
    context = make_context()
    actions = torch.rand(B, H, A) * 2 - 1
    pad = torch.zeros(B, H, dtype=torch.bool)
    pad[:, -1] = True
    torch.manual_seed(3)
    loss_a, _ = head.loss(context, actions, pad)
    changed = actions.clone()
    changed[:, -1] = -changed[:, -1]
    torch.manual_seed(3)
    loss_b, _ = head.loss(context, changed, pad)
    assert torch.allclose(loss_a, loss_b)


@pytest.mark.parametrize("name", HEADS.names())
def test_head_fits_a_fixed_synthetic_mapping(name):
    """Context -> chunk is a fixed function; training must drive the loss well below its start."""
    torch.manual_seed(0)
    head = make_head(name).train()
    contexts = make_context(batch=16, seed=5)
    mixing = torch.randn(Q * D, H * A, generator=torch.Generator().manual_seed(6))
    targets = torch.tanh(contexts.global_vector() @ mixing / D**0.5).reshape(16, H, A)
    pad = torch.zeros(16, H, dtype=torch.bool)
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        loss, _ = head.loss(contexts, targets, pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert end < 0.5 * start, f"{name}: loss {start:.3f} -> {end:.3f}"


@pytest.mark.parametrize("name", HEADS.names())
def test_heads_run_under_bf16_autocast(name):
    head = make_head(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = head.train().loss(make_context(), torch.rand(B, H, A) * 2 - 1, torch.zeros(B, H, dtype=torch.bool))
        actions = head.eval().predict(make_context(), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and actions.shape == (B, H, A)
