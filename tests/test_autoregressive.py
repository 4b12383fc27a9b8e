"""Tokenizer, constrained decoding, padding, seeding and overfitting of the autoregressive head."""

import pytest
import torch

from action_head.autoregressive import AutoregressiveHead, AutoregressiveHeadConfig
from action_head.tokenizer import ActionTokenizer
from core.configuration import ConfigError
from fusion.context import Context

B, Q, N, D = 3, 1, 5, 32
H, A = 4, 3


def make_context(seed: int = 0, batch: int = B) -> Context:
    """Random context; sample 0 has one padded scene token so the memory mask is exercised."""
    g = torch.Generator().manual_seed(seed)
    pad = torch.zeros(batch, N, dtype=torch.bool)
    pad[0, -1] = True
    return Context(query=torch.randn(batch, Q, D, generator=g), scene=torch.randn(batch, N, D, generator=g),
                   scene_pad_mask=pad)


def make_head(seed: int = 0, **overrides) -> AutoregressiveHead:
    torch.manual_seed(seed)
    options = dict(n_bins=64, n_layers=1, n_heads=4, dropout=0.0)
    options.update(overrides)
    return AutoregressiveHead(AutoregressiveHeadConfig(**options), d_model=D, n_queries=Q, chunk_size=H,
                              action_dim=A)


# --- tokenizer -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_bins", [2, 7, 256, 512])
def test_tokenizer_round_trip_within_half_a_bin(n_bins: int):
    tokenizer = ActionTokenizer(n_bins)
    values = torch.cat([torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                        torch.tensor([-1.0, 1.0, 0.0])])
    ids = tokenizer.encode(values)
    assert ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < n_bins
    error = (tokenizer.decode(ids) - values).abs().max().item()
    assert error <= tokenizer.bin_width / 2 + 1e-6
    assert tokenizer.encode(torch.tensor([-1.0, 1.0])).tolist() == [0, n_bins - 1]


def test_tokenizer_clamps_out_of_range_values_to_edge_bins():
    tokenizer = ActionTokenizer(16, low=-1.0, high=1.0)
    ids = tokenizer.encode(torch.tensor([-5.0, -1.0001, 1.0001, 3.0]))
    assert ids.tolist() == [0, 0, 15, 15]
    assert tokenizer.decode(ids).abs().max() <= 1.0


def test_tokenizer_keeps_shape():
    tokenizer = ActionTokenizer()
    values = torch.rand(2, 4, 3) * 2 - 1
    assert tokenizer.encode(values).shape == values.shape
    assert tokenizer.decode(tokenizer.encode(values)).shape == values.shape


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError):
        AutoregressiveHeadConfig(n_bins=1)
    with pytest.raises(ConfigError):
        AutoregressiveHeadConfig(input_mask_prob=1.0)
    with pytest.raises(ConfigError):
        AutoregressiveHeadConfig(temperature=-0.1)


# --- constrained decoding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_head_decodes_exactly_l_valid_bin_tokens(seed: int, temperature: float):
    head = make_head(seed, temperature=temperature).eval()
    assert head.to_logits.out_features == head.config.n_bins  # the constraint: BOS/MASK are not outputs
    context = make_context(seed)
    tokens = head.generate_tokens(context, torch.Generator().manual_seed(seed))
    assert tokens.shape == (B, H * A) and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < head.config.n_bins
    chunk = head.predict(context, torch.Generator().manual_seed(seed))
    assert chunk.shape == (B, H, A) and chunk.dtype == torch.float32
    assert chunk.abs().max() <= 1.0


def test_predict_decodes_the_generated_tokens_timestep_major():
    head = make_head(temperature=1.0).eval()
    context = make_context()
    tokens = head.generate_tokens(context, torch.Generator().manual_seed(5))
    chunk = head.predict(context, torch.Generator().manual_seed(5))
    assert torch.equal(head.tokenizer.encode(chunk).reshape(B, H * A), tokens)


# --- training loss ----------------------------------------------------------------------------------------

def test_loss_ignores_padded_steps():
    head = make_head().eval()
    context = make_context()
    actions = torch.rand(B, H, A) * 2 - 1
    is_pad = torch.zeros(B, H, dtype=torch.bool)
    is_pad[1, 2:] = True  # padding trails the chunk, as the sampler produces it
    is_pad[2, 3:] = True
    loss, metrics = head.loss(context, actions, is_pad)

    changed = actions.clone()
    changed[is_pad] = torch.rand(int(is_pad.sum()), A) * 2 - 1
    changed_loss, changed_metrics = head.loss(context, changed, is_pad)
    assert torch.allclose(loss, changed_loss)
    assert metrics == pytest.approx(changed_metrics)

    unpadded_loss, _ = head.loss(context, changed, torch.zeros_like(is_pad))
    assert not torch.allclose(loss, unpadded_loss)  # the padded steps do count when not masked
    assert set(metrics) == {"ce", "token_accuracy"} and all(isinstance(v, float) for v in metrics.values())


def test_every_parameter_gets_a_gradient_with_and_without_input_masking():
    for prob in (0.0, 0.5):
        head = make_head(input_mask_prob=prob).train()
        loss, _ = head.loss(make_context(), torch.rand(B, H, A) * 2 - 1, torch.zeros(B, H, dtype=torch.bool))
        loss.backward()
        missing = [name for name, p in head.named_parameters() if p.grad is None]
        assert not missing, missing


def test_input_masking_only_in_training_mode():
    head = make_head(input_mask_prob=0.5)
    context, actions = make_context(), torch.rand(B, H, A) * 2 - 1
    is_pad = torch.zeros(B, H, dtype=torch.bool)
    head.eval()
    assert torch.equal(head.loss(context, actions, is_pad)[0], head.loss(context, actions, is_pad)[0])
    head.train()
    torch.manual_seed(0)
    first = head.loss(context, actions, is_pad)[0]
    torch.manual_seed(1)
    assert not torch.equal(first, head.loss(context, actions, is_pad)[0])


def test_loss_and_predict_under_bf16_autocast():
    head = make_head(temperature=1.0)
    context = make_context()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = head.loss(context, torch.rand(B, H, A) * 2 - 1, torch.zeros(B, H, dtype=torch.bool))
        chunk = head.eval().predict(context, torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert chunk.shape == (B, H, A) and chunk.abs().max() <= 1.0


# --- sampling ---------------------------------------------------------------------------------------------

def test_sampling_is_reproducible_per_generator_seed():
    head = make_head(temperature=1.0).eval()
    context = make_context()
    first = head.predict(context, torch.Generator().manual_seed(7))
    again = head.predict(context, torch.Generator().manual_seed(7))
    other = head.predict(context, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


# --- learning ---------------------------------------------------------------------------------------------

def test_overfits_one_chunk_and_greedy_decoding_reproduces_it():
    head = make_head(n_bins=32, n_layers=2).train()
    context = make_context(batch=1)
    target = torch.rand(1, H, A, generator=torch.Generator().manual_seed(3)) * 2 - 1
    is_pad = torch.zeros(1, H, dtype=torch.bool)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(300):
        loss, metrics = head.loss(context, target, is_pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if metrics["token_accuracy"] == 1.0 and metrics["ce"] < 0.05:
            break
    head.eval()
    assert torch.equal(head.generate_tokens(context), head.tokenizer.encode(target).reshape(1, H * A))
    error = (head.predict(context) - target).abs().max().item()
    assert error <= head.tokenizer.bin_width / 2 + 1e-6


# --- key/value cache ------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_decoding_gives_the_uncached_tokens(temperature: float):
    """The KV-cached decoder emits the tokens of the full-prefix reference, greedy and sampled, and its
    logits at every position match the full decoder's (two layers, a padded memory token)."""
    head = make_head(n_layers=2, temperature=temperature).eval()
    context = make_context(seed=3)
    cached = head.generate_tokens(context, torch.Generator().manual_seed(5))
    reference = head.generate_tokens(context, torch.Generator().manual_seed(5), use_cache=False)
    assert torch.equal(cached, reference)

    from action_head.autoregressive import _KVCache

    memory, memory_pad = context.memory()
    inputs = torch.cat([torch.full((B, 1), head.bos_id), reference[:, :-1]], dim=1)
    full = head._logits(inputs, memory, memory_pad)
    cache = _KVCache(head.decoder, memory, memory_pad)
    steps = [head.to_logits(cache.step(head.token_embedding(inputs[:, t:t + 1]) + head.position_embedding[t]))
             for t in range(head.seq_len)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_prefix_decodes_only_its_tokens():
    """A re-plan that executes 2 of the H steps decodes 2 * A tokens, not H * A."""
    head = make_head(n_layers=2).eval()
    calls = []
    head.to_logits.register_forward_hook(lambda *_: calls.append(1))
    prefix = head.predict_prefix(make_context(seed=3), 2)
    assert prefix.shape == (B, 2, A)
    assert len(calls) == 2 * A
