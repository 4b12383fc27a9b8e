"""The composed policy: shapes, the action queue cadence, ensembling, relative actions, checkpoints."""

import json
import shutil

import pytest
import torch
from conftest import SMALL_FEATURES, fake_batch, small_config, unit_stats

from core.errors import UserError
from core.configuration import ConfigError
from core.keys import OBS_FIRST_IMAGE, OBS_FIRST_TOKENS, OBS_IMAGE, OBS_PRIVILEGED, OBS_STATE, TASK
from envs.features import Features
from policy.checkpoint import load_policy, save_policy
from policy.vla_policy import VLAPolicy


def make_policy(text_model, head="regression", overrides=None, features=SMALL_FEATURES) -> VLAPolicy:
    torch.manual_seed(0)
    policy = VLAPolicy(small_config(text_model, head, overrides).model, features)
    policy.normalizer.fit(unit_stats(features))
    return policy


def step_obs(batch: dict, step: int = 0) -> dict:
    obs = {OBS_STATE: batch[OBS_STATE][:, step], TASK: batch[TASK]}
    if OBS_IMAGE in batch:
        obs[OBS_IMAGE] = batch[OBS_IMAGE][:, step]
    return obs


def test_forward_and_predict_shapes(tiny_text_model):
    policy = make_policy(tiny_text_model)
    batch = fake_batch(SMALL_FEATURES, policy.config)
    loss, metrics = policy(batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and metrics
    chunk = policy.eval().predict_action_chunk(batch)
    assert chunk.shape == (3, 4, 3)


@pytest.mark.parametrize("head", ["flow", "regression"])
def test_bf16_inference_gives_the_fp32_chunk_up_to_bf16_rounding(tiny_text_model, head):
    policy = make_policy(tiny_text_model, head).for_inference()
    batch = fake_batch(SMALL_FEATURES, policy.config)
    fp32 = policy.predict_action_chunk(batch, torch.Generator().manual_seed(0))
    fast = policy.for_inference("bf16").predict_action_chunk(batch, torch.Generator().manual_seed(0))
    assert policy.vision.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.dtype == torch.float32 and fast.shape == fp32.shape
    span = float(fp32.abs().max())
    assert 0 < (fast - fp32).abs().max() < 0.05 * span  # rounded, not another computation
    seen = []
    predict = policy.head.predict
    policy.head.predict = lambda context, generator=None: (
        seen.append((context.query.dtype, torch.is_autocast_enabled("cpu"))) or predict(context))
    policy.predict_action_chunk(batch)
    assert seen == [(torch.float32, False)]  # the head reads an fp32 context, outside autocast
    with pytest.raises(UserError, match="inference precision 'fp16' is not one of fp32, bf16"):
        policy.for_inference("fp16")


def test_missing_statistics_raise(tiny_text_model):
    policy = VLAPolicy(small_config(tiny_text_model).model, SMALL_FEATURES)
    with pytest.raises(RuntimeError, match="never fitted"):
        policy(fake_batch(SMALL_FEATURES, policy.config))


def test_bad_observation_shapes_give_clear_errors(tiny_text_model):
    policy = make_policy(tiny_text_model)
    batch = fake_batch(SMALL_FEATURES, policy.config)
    with pytest.raises(ValueError, match="observation.state must be"):
        policy({**batch, OBS_STATE: batch[OBS_STATE][..., :2]})
    with pytest.raises(KeyError, match="observation.image"):
        policy({k: v for k, v in batch.items() if k != OBS_IMAGE})
    with pytest.raises(ValueError, match="observation.image must be"):
        policy({**batch, OBS_IMAGE: batch[OBS_IMAGE][..., :16, :16]})


@pytest.mark.parametrize("head", ["regression", "autoregressive"])
def test_select_action_calls_the_model_once_every_n_action_steps(tiny_text_model, head):
    """Each re-plan asks for the n_action_steps the queue executes (the autoregressive head decodes
    only those), and the actions are the whole chunk's first steps."""
    policy = make_policy(tiny_text_model, head, overrides=["policy.n_action_steps=3"]).eval()
    batch = fake_batch(SMALL_FEATURES, policy.config, batch_size=2)
    chunks = []
    original = policy.predict_action_chunk

    def spy(obs, generator=None, steps=None):
        assert steps == 3
        chunks.append(original(obs, generator))  # the whole chunk, to compare with
        return original(obs, generator, steps)

    policy.predict_action_chunk = spy
    actions = [policy.select_action(step_obs(batch)) for _ in range(7)]
    assert len(chunks) == 3  # steps 0, 3, 6
    for step, action in enumerate(actions):
        assert torch.equal(action, chunks[step // 3][:, step % 3])
    policy.reset()
    policy.select_action(step_obs(batch))
    assert len(chunks) == 4  # reset empties the queue


def test_ensembling_replans_every_step(tiny_text_model):
    policy = make_policy(tiny_text_model, overrides=["policy.ensemble=act", "policy.n_action_steps=1"]).eval()
    batch = fake_batch(SMALL_FEATURES, policy.config, batch_size=1)
    calls = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda obs, generator=None, steps=None: (calls.append(steps)
                                                                           or original(obs, generator, steps))
    for _ in range(5):
        assert policy.select_action(step_obs(batch)).shape == (1, 3)
    assert calls == [None] * 5  # the ensembler blends whole chunks


def test_observation_history_is_stacked_in_time_order(tiny_text_model):
    policy = make_policy(tiny_text_model, overrides=["policy.n_obs_steps=2"]).eval()
    seen = []
    policy.predict_action_chunk = (lambda obs, generator=None, steps=None:
                                   seen.append(obs[OBS_STATE].clone()) or torch.zeros(1, 4, 3))
    states = [torch.full((1, 4), float(i)) for i in range(3)]
    images = torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8)
    for state in states:
        policy.select_action({OBS_STATE: state, OBS_IMAGE: images, TASK: ["reach the goal"]})
    assert torch.equal(seen[0][0, :, 0], torch.tensor([0.0, 0.0]))  # the first frame is repeated
    assert torch.equal(seen[1][0, :, 0], torch.tensor([1.0, 2.0]))  # after 2 queued steps: frames 1 and 2


def test_relative_actions_add_the_state_back(tiny_text_model):
    features = Features(state_dim=3, action_dim=3, cameras=(), image_size=(0, 0))
    policy = make_policy(tiny_text_model, overrides=["policy.relative_actions=true"], features=features).eval()
    batch = fake_batch(features, policy.config, batch_size=2)
    absolute = policy.predict_action_chunk(batch)
    relative = policy.normalizer.unnormalize("action", policy.head.predict(policy.encode(batch)))
    assert torch.allclose(absolute, relative + batch[OBS_STATE][:, -1:, :3], atol=1e-5)
    # Training targets are relative too: the head sees action - state, normalized.
    targets = policy._actions_in(batch, batch["action"])
    expected = policy.normalizer.normalize("action", batch["action"] - batch[OBS_STATE][:, -1:, :3])
    assert torch.allclose(targets, expected)


def test_relative_actions_need_a_shared_space(tiny_text_model):
    features = Features(state_dim=2, action_dim=3)
    with pytest.raises(ValueError, match="relative_actions"):
        VLAPolicy(small_config(tiny_text_model, overrides=["policy.relative_actions=true"]).model, features)


def test_state_only_policy_has_no_vision_encoder(tiny_text_model):
    features = Features(state_dim=5, action_dim=2)
    policy = make_policy(tiny_text_model, features=features)
    assert policy.vision is None
    loss, _ = policy(fake_batch(features, policy.config))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("head", ["diffusion", "autoregressive"])
def test_save_load_gives_the_same_actions(tiny_text_model, tmp_path, head):
    policy = make_policy(tiny_text_model, head).eval()
    batch = fake_batch(SMALL_FEATURES, policy.config)
    expected = policy.predict_action_chunk(batch, torch.Generator().manual_seed(0))
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.config == policy.config and loaded.features == policy.features
    assert torch.equal(loaded.predict_action_chunk(batch, torch.Generator().manual_seed(0)), expected)


def test_checkpoint_is_safetensors_and_json_without_the_frozen_text_model(tiny_text_model, tmp_path):
    policy = make_policy(tiny_text_model)
    directory = save_policy(policy, tmp_path / "ckpt")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors", "stats.json"]
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith("text.language_model") for k in keys) and "text.proj.weight" in keys
    assert any(k.startswith("normalizer.") for k in keys)
    assert json.loads((directory / "stats.json").read_text())["action"]["min"] == [-1.0, -1.0, -1.0]
    save_policy(policy, directory)  # overwriting an existing checkpoint works and leaves no debris
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_loading_a_directory_that_is_not_a_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an EasyVLA checkpoint"):
        load_policy(tmp_path)


def test_state_dropout_hides_the_state_only_in_training(tiny_text_model):
    policy = make_policy(tiny_text_model, overrides=["policy.state_dropout=0.5", "fusion.dropout=0.0"])
    batch = fake_batch(SMALL_FEATURES, policy.config, batch_size=64)
    policy.train()
    torch.manual_seed(0)
    hidden = policy.encode(batch).query
    other_state = {**batch, OBS_STATE: batch[OBS_STATE] + 5.0}
    torch.manual_seed(0)  # the same samples are hidden: their context must not depend on the state
    changed = policy.encode(other_state).query
    unchanged = torch.isclose(hidden, changed, atol=1e-5).all(dim=-1).squeeze(1)
    assert 10 < unchanged.sum() < 54  # about half the samples are hidden
    policy.eval()
    assert not torch.allclose(policy.encode(batch).query, policy.encode(other_state).query)
    loss, _ = policy.train()(batch)
    loss.backward()
    assert policy.hidden_state_token.grad is not None


def test_ema_warms_up_then_averages_with_its_decay():
    from policy.ema import EMA

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)  # the weights jump once, then stay
    for _ in range(100):
        ema.update(model)
    # Warm-up: the initial weights are forgotten within ~100 steps, not after thousands (0.999^100 = 0.90).
    assert ema.shadow["weight"].item() > 0.9
    assert ema.current_decay() == pytest.approx(101 / 110)  # still warming up after 100 updates
    ema.updates = 10_000
    assert ema.current_decay() == 0.999
    with torch.no_grad():
        model.weight.fill_(0.0)
    before = ema.shadow["weight"].item()
    ema.update(model)
    assert ema.shadow["weight"].item() == pytest.approx(before * 0.999)
    with ema.applied(model):
        assert model.weight.item() == pytest.approx(before * 0.999)
    assert model.weight.item() == 0.0  # the raw weights come back


def test_a_checkpoint_left_aside_by_a_crash_loads_and_the_next_save_restores_it(tiny_text_model, tmp_path):
    from policy.checkpoint import NonFiniteWeightsError

    policy = make_policy(tiny_text_model)
    save_policy(policy, tmp_path / "latest")
    (tmp_path / "latest").rename(tmp_path / ".latest.old")  # a crash between the two renames of a save
    loaded = load_policy(tmp_path / "latest")  # reading writes nothing
    assert loaded.config == policy.config and not (tmp_path / "latest").exists()
    save_policy(policy, tmp_path / "latest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]
    with torch.no_grad():
        next(policy.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="training diverged"):
        save_policy(policy, tmp_path / "latest")
    assert torch.isfinite(next(load_policy(tmp_path / "latest").parameters())).all()  # the good one stays


PRIVILEGED_FEATURES = Features(state_dim=4, action_dim=3, cameras=("corner",), image_size=(32, 32), privileged_dim=5)


def test_aux_state_loss_adds_the_weighted_prediction_error_of_the_privileged_state(tiny_text_model):
    batch = fake_batch(PRIVILEGED_FEATURES, small_config(tiny_text_model).model)
    plain = make_policy(tiny_text_model, features=PRIVILEGED_FEATURES)
    aux = make_policy(tiny_text_model, overrides=["policy.aux_state_weight=2.0"], features=PRIVILEGED_FEATURES)
    plain_loss, _ = plain(batch)
    aux_loss, metrics = aux(batch)  # the same seed builds the same encoders, fusion and head
    assert metrics["aux_state_loss"] > 0
    assert torch.isclose(aux_loss - plain_loss, torch.tensor(2.0 * metrics["aux_state_loss"]), rtol=1e-4)
    assert plain.aux_state is None and "aux_state_loss" not in plain(batch)[1]


def test_aux_state_loss_teaches_vision_a_quantity_only_the_image_shows(tiny_text_model):
    """The privileged target is where a bright square sits in the image (as a goal would); the state and
    the instruction are the same in every sample, so only the image tells it: the loss falls only if its
    gradient trains the encoders through the context the head reads."""
    policy = make_policy(tiny_text_model, overrides=["policy.aux_state_weight=1.0"],
                         features=PRIVILEGED_FEATURES).train()
    batch = fake_batch(PRIVILEGED_FEATURES, policy.config, batch_size=16)
    batch[OBS_STATE] = torch.zeros_like(batch[OBS_STATE])
    batch[TASK] = ["reach the goal"] * 16
    columns = torch.arange(16) * 26 // 15  # the square's left edge, 0..26 of 32
    images = torch.zeros_like(batch[OBS_IMAGE])
    for i, column in enumerate(columns.tolist()):
        images[i, ..., 13:19, column:column + 6] = 255
    batch[OBS_IMAGE] = images
    batch[OBS_PRIVILEGED] = (columns.float() / 13 - 1).view(16, 1).expand(16, 5).contiguous()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)

    def aux_loss() -> float:  # measured without dropout, so the noise of a training step does not blur it
        policy.eval()
        with torch.no_grad():
            value = policy(batch)[1]["aux_state_loss"]
        policy.train()
        return value

    before, losses = aux_loss(), []
    for _ in range(200):  # 60 sufficed on AVX-512 CPUs; an AVX2 one was at 0.09 of 0.43 by step 120
        loss, metrics = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(metrics["aux_state_loss"])
    assert aux_loss() < 0.2 * before, (before, aux_loss(), losses[::10])


def test_aux_state_needs_privileged_features_and_survives_a_checkpoint(tiny_text_model, tmp_path):
    with pytest.raises(ValueError, match="privileged_dim"):
        make_policy(tiny_text_model, overrides=["policy.aux_state_weight=1.0"])
    policy = make_policy(tiny_text_model, overrides=["policy.aux_state_weight=1.0"], features=PRIVILEGED_FEATURES)
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.features.privileged_dim == 5
    assert all(torch.equal(a, b) for a, b in zip(loaded.aux_state.state_dict().values(),
                                                 policy.aux_state.state_dict().values()))
    with pytest.raises(ConfigError, match="aux_state_weight"):
        small_config(tiny_text_model, overrides=["backbone.type=vlm", "policy.aux_state_weight=1.0"])


def test_first_frame_joins_the_scene_and_select_action_keeps_each_episodes_first_images(tiny_text_model):
    policy = make_policy(tiny_text_model, overrides=["policy.first_frame=true"]).eval()
    batch = fake_batch(SMALL_FEATURES, policy.config, batch_size=2)
    plain = make_policy(tiny_text_model).eval()
    assert policy.encode(batch).scene.shape[1] == 2 * plain.encode(batch).scene.shape[1] - 1  # one text token
    other_first = {**batch, OBS_FIRST_IMAGE: 255 - batch[OBS_FIRST_IMAGE]}
    assert not torch.allclose(policy.predict_action_chunk(batch), policy.predict_action_chunk(other_first))

    seen = []
    original = policy.predict_action_chunk

    def spy(obs, generator=None, steps=None):
        seen.append(obs[OBS_FIRST_IMAGE].clone())
        return original(obs, generator, steps)

    policy.predict_action_chunk = spy
    frames = [step_obs({**batch, OBS_IMAGE: batch[OBS_IMAGE] + k}) for k in range(5)]  # n_action_steps=2
    for step, obs in enumerate(frames):
        if step == 3:
            policy.reset(rows=[1])  # row 1 starts a new episode at step 3
        policy.select_action(obs)
    assert len(seen) == 4  # re-plans: both rows at steps 0 and 2, row 1 at 3 (new episode), row 0 at 4
    assert torch.equal(seen[0], frames[0][OBS_IMAGE]) and torch.equal(seen[1], frames[0][OBS_IMAGE])
    assert torch.equal(seen[2], frames[3][OBS_IMAGE][1:])  # row 1's new episode began at step 3
    assert torch.equal(seen[3], frames[0][OBS_IMAGE][:1])  # row 0 still in its first episode
    with pytest.raises(KeyError, match=OBS_FIRST_IMAGE):
        policy.encode({k: v for k, v in batch.items() if k != OBS_FIRST_IMAGE})


def test_select_action_encodes_each_episodes_first_images_once_to_the_same_chunks(tiny_text_model):
    policy = make_policy(tiny_text_model, overrides=["policy.first_frame=true"]).eval()
    batch = fake_batch(SMALL_FEATURES, policy.config, batch_size=2)
    encoded = {**batch, OBS_FIRST_TOKENS: policy.encode_first_frame(batch[OBS_FIRST_IMAGE])}
    assert torch.equal(policy.predict_action_chunk(encoded, torch.Generator().manual_seed(0)),
                       policy.predict_action_chunk(batch, torch.Generator().manual_seed(0)))
    assert make_policy(tiny_text_model).encode_first_frame(batch[OBS_FIRST_IMAGE]) is None

    inputs = []
    policy.vision.register_forward_hook(lambda module, args, out: inputs.append(args[0].clone()))
    frames = [step_obs({**batch, OBS_IMAGE: batch[OBS_IMAGE] + k}) for k in range(5)]  # n_action_steps=2
    for step, obs in enumerate(frames):
        if step == 3:
            policy.reset(rows=[1])
        policy.select_action(obs)
    # 4 re-plans encode their current frames (steps 0, 2, 3, 4); the first images are encoded twice: both
    # episodes' at step 0 (before that step's re-plan), row 1's new episode's at step 3 (without the cache: 8)
    assert len(inputs) == 6
    assert torch.equal(inputs[0], frames[0][OBS_IMAGE]) and torch.equal(inputs[3], frames[3][OBS_IMAGE][1:])


def test_first_frame_passes_the_trunk_without_gradients_and_its_embedding_learns(tiny_text_model):
    policy = make_policy(tiny_text_model, overrides=["policy.first_frame=true"]).train()
    batch = fake_batch(SMALL_FEATURES, policy.config, batch_size=2)
    passes = []
    policy.vision.register_forward_hook(lambda module, args, out: passes.append(torch.is_grad_enabled()))
    loss, _ = policy(batch)
    loss.backward()
    assert sorted(passes) == [False, True]  # the first frame's pass without gradients, the current frame's with
    assert policy.first_frame_embed.grad is not None and policy.first_frame_embed.grad.abs().sum() > 0


def test_first_frame_needs_cameras_and_the_modular_backbone(tiny_text_model):
    with pytest.raises(ValueError, match="first_frame needs cameras"):
        make_policy(tiny_text_model, overrides=["policy.first_frame=true"], features=Features(4, 3))
    with pytest.raises(ConfigError, match="first_frame"):
        small_config(tiny_text_model, overrides=["backbone.type=vlm", "policy.first_frame=true"])


@pytest.mark.parametrize("head", ["flow", "regression", "autoregressive"])
def test_compiled_policy_gives_the_eager_chunk_for_a_fixed_generator(tiny_text_model, monkeypatch, head):
    """torch.compile captures the ResNet, the state encoder, the fusion and a head's step each in one graph
    (``fullgraph``: a graph break would cost a re-plan its speed), and the captured graphs give the same chunks: nothing
    per-chunk (the observation, the prepared condition, the noise) is baked into them as a constant. The
    backend here replays the captured graphs eagerly: inductor's C++ build takes minutes on 2 cores
    (``python -m benchmarks.latency --compile`` compares inductor's chunks with eager's on the real model)."""
    import functools

    from torch._dynamo.utils import counters

    # fullgraph: a graph break is an error (dynamo's graph_break counter stays empty in this torch), and so
    # is running into dynamo's recompile limit, which other tests' compiled policies count towards: reset.
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager", fullgraph=True))
    policy = make_policy(tiny_text_model, head).for_inference()
    batch = fake_batch(SMALL_FEATURES, policy.config)
    other = fake_batch(SMALL_FEATURES, policy.config, batch_size=1, seed=1)  # another observation and batch size
    eager = [policy.predict_action_chunk(b, torch.Generator().manual_seed(0)) for b in (batch, other)]
    counters.clear()
    assert policy.compile_for_inference() is policy
    assert policy.compile_for_inference() is policy  # once is enough; a second call wraps nothing twice
    compiled = [policy.predict_action_chunk(b, torch.Generator().manual_seed(0)) for b in (batch, other)]
    # Captured: the ResNet, the state encoder, the fusion, and the denoiser's or the decoder's step.
    assert counters["stats"]["unique_graphs"] >= (3 if head == "regression" else 4)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
    if head == "flow":
        assert not torch.equal(compiled[0], policy.predict_action_chunk(batch, torch.Generator().manual_seed(1)))
    graphs = counters["stats"]["unique_graphs"]
    loss, _ = policy.train()(batch)  # training stays eager and differentiable
    loss.backward()
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled for training


def test_compiled_networks_run_with_frozen_weights(monkeypatch):
    """compile_frozen turns inductor's freezing on around every call without gradients, where dynamo reads it
    (at the first call and at each recompile), and leaves it as it was between calls; with gradients on
    (training) the function runs eager."""
    from torch._inductor import config as inductor_config

    from core.device import compile_frozen

    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn: lambda *args: seen.append(inductor_config.freezing) or fn(*args))
    before = inductor_config.freezing
    double = compile_frozen(lambda x: 2 * x)
    with torch.no_grad():  # inference: with gradients on, the eager function runs
        assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0)) and double(torch.ones(3)).shape == (3,)
    assert seen == [True, True] and inductor_config.freezing == before
    assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0)) and seen == [True, True]


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                    reason="inductor builds its CPU kernels with a C++ compiler, and this machine has none")
def test_inductor_folds_the_weights_compile_frozen_reads():
    """What compile_frozen is for, through inductor itself (Linear layers: seconds to build on 2 cores): the
    compiled output is the eager one, and a weight changed after the first call is not seen, because it was
    folded into the graph as a constant. Unfrozen, dynamo passes the weights in at every call and the change
    would show; ``torch.compile(options={"freezing": True})`` did not freeze (it fails this test). A second
    module of the same class, compiled in the same process, runs with its own weights, not the first one's
    constants (dynamo caches per code object: two policies share their modules' code)."""
    from core.device import compile_frozen

    torch._dynamo.reset()
    torch.manual_seed(0)
    layer, other, x = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4), torch.randn(2, 8)
    run, run_other = compile_frozen(layer), compile_frozen(other)
    with torch.no_grad():
        first = run(x)
        torch.testing.assert_close(first, layer(x))
        torch.testing.assert_close(run_other(x), other(x))
        layer.weight.add_(1.0)
        assert torch.equal(run(x), first)


def test_compiling_for_a_cpu_without_a_cpp_compiler_is_a_user_error(tiny_text_model, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="needs a C.. compiler"):
        make_policy(tiny_text_model, "flow").for_inference().compile_for_inference()
