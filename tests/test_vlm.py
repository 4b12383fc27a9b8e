"""The vision-language backbone (VLA-0 recipe) with a tiny random SmolVLM loaded like a hub model."""

import json
import sys
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from core.keys import ACTION, OBS_IMAGE, OBS_STATE
from data.synthetic import synthetic_batch, unit_normalizer_stats
from envs.features import Features
from policy.backbones import build_policy
from policy.config import BackboneConfig, ModelConfig, PolicyConfig, VLMConfig
from policy.vlm_policy import IGNORE, VLMPolicy

REPO = Path(__file__).resolve().parents[1]
FEATURES = Features(state_dim=2, action_dim=2, cameras=("top",), image_size=(96, 96))


def vlm_policy(tiny_vlm, features=FEATURES, n_bins=64, seed=0, **overrides) -> VLMPolicy:
    policy_overrides = {k: overrides.pop(k) for k in ("relative_actions", "n_obs_steps") if k in overrides}
    config = ModelConfig(backbone=BackboneConfig("vlm"), policy=PolicyConfig(chunk_size=4, n_action_steps=2,
                                                                             **policy_overrides),
                         vlm=VLMConfig(model_name=tiny_vlm, n_bins=n_bins, **overrides))
    torch.manual_seed(seed)
    policy = build_policy(config, features)
    policy.normalizer.fit(unit_normalizer_stats(features))
    return policy


def batch(n=3, features=FEATURES, seed=0) -> dict:
    return synthetic_batch(features, 1, 4, n, seed=seed)


def test_the_backbone_is_chosen_by_config(tiny_vlm):
    policy = vlm_policy(tiny_vlm)
    assert type(policy).__name__ == "VLMPolicy"
    assert type(policy.model).__name__ == "SmolVLMForConditionalGeneration"  # loaded like a hub model


def test_targets_are_the_chunk_as_text_and_only_they_are_scored(tiny_vlm):
    policy = vlm_policy(tiny_vlm).eval()
    data = batch()
    inputs = policy.training_inputs(data)
    for row in range(3):
        scored = inputs["labels"][row][inputs["labels"][row] != IGNORE]
        assert scored[-1] == policy.end_id  # the chunk ends with the end-of-turn token
        text = policy.tokenizer.decode(scored[:-1])
        decoded = policy.action_text.decode(text)  # round trip within half a bin
        assert torch.allclose(decoded, data[ACTION][row].clamp(-1, 1), atol=1 / (policy.config.vlm.n_bins - 1) + 1e-6)
        # Everything before the chunk is prompt (images, instruction, state) or padding: not scored.
        first = int((inputs["labels"][row] != IGNORE).nonzero()[0])
        assert (inputs["labels"][row][:first] == IGNORE).all()
        assert torch.equal(inputs["input_ids"][row][first:], scored)  # in eval mode nothing is masked
    # Images are in the prompt: the processor's pixel values travel with the tokens.
    assert inputs["pixel_values"].shape[0] == 3
    assert (inputs["input_ids"] == policy.model.config.image_token_id).sum() > 0


def test_the_loss_depends_only_on_action_tokens_and_trains(tiny_vlm):
    policy = vlm_policy(tiny_vlm)
    data = batch()
    loss, metrics = policy(data)
    assert torch.isfinite(loss) and 0 <= metrics["token_accuracy"] <= 1
    loss.backward()
    grads = {n: p.grad for n, p in policy.model.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "vision" in n)  # images count
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "text_model.layers" in n)
    # A few steps on one batch lower the loss: the gradient reaches what the targets need.
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    first = float(loss.detach())
    for _ in range(30):
        optimizer.zero_grad()
        loss, _ = policy(data)
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.7 * first


def test_the_loss_computes_logits_only_where_tokens_are_scored_and_equals_the_full_loss(tiny_vlm, monkeypatch):
    """The policy asks the model for the last few positions' logits only (the memory lever) and its
    loss and accuracy equal cross-entropy over the full logits with the same labels."""
    policy = vlm_policy(tiny_vlm).eval()  # eval: no masking, so both passes see the same inputs
    data = batch()
    inputs = policy.training_inputs(data)
    full = policy.model(**inputs)  # transformers' own loss over every position's logits
    kept, forward = [], policy.model.forward

    def spy(**kwargs):
        out = forward(**kwargs)
        kept.append(out.logits.shape)
        return out

    monkeypatch.setattr(policy.model, "forward", spy)
    loss, metrics = policy(data)
    longest = int((inputs["labels"] != IGNORE).sum(1).max())
    assert kept == [(3, longest + 1, full.logits.shape[-1])] and longest + 1 < inputs["input_ids"].shape[1] / 2
    assert torch.allclose(loss, full.loss, atol=1e-5)
    labels = inputs["labels"][:, 1:]
    accuracy = (full.logits[:, :-1].argmax(-1) == labels)[labels != IGNORE].float().mean()
    assert metrics["token_accuracy"] == pytest.approx(float(accuracy))


def test_masking_hides_action_tokens_in_the_input_only_in_training(tiny_vlm):
    policy = vlm_policy(tiny_vlm, mask_prob=0.5)
    data = batch()
    torch.manual_seed(0)
    inputs = policy.training_inputs(data)
    scored = inputs["labels"] != IGNORE
    hidden = (inputs["input_ids"][scored] != inputs["labels"][scored]).float().mean()
    assert 0.3 < hidden < 0.7 and (inputs["input_ids"][scored][inputs["input_ids"][scored] != inputs["labels"][scored]]
                                   == policy.pad_id).all()
    policy.eval()
    inputs = policy.training_inputs(data)
    scored = inputs["labels"] != IGNORE
    assert torch.equal(inputs["input_ids"][scored], inputs["labels"][scored])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_decoding_of_an_untrained_model_always_gives_a_chunk(tiny_vlm, tmp_path, seed):
    from policy.tiny_vlm import save_tiny_vlm

    model = save_tiny_vlm(tmp_path / "m", seed=seed)  # different random weights, different outputs
    policy = vlm_policy(model, n_bins=512).eval()
    chunk = policy.predict_action_chunk(batch(n=2, seed=seed))
    assert chunk.shape == (2, 4, 2)
    assert (chunk.abs() <= 1 + 1e-6).all()  # every decoded number is a bin of the normalized range


def test_relative_actions_are_written_relative_to_the_state(tiny_vlm):
    policy = vlm_policy(tiny_vlm, relative_actions=True).eval()
    data = batch()
    data[OBS_STATE] = torch.full_like(data[OBS_STATE], 0.25)
    data[ACTION] = torch.full_like(data[ACTION], 0.75)
    inputs = policy.training_inputs(data)
    scored = inputs["labels"][0][inputs["labels"][0] != IGNORE][:-1]
    written = policy.action_text.decode(policy.tokenizer.decode(scored))
    assert torch.allclose(written, torch.full((4, 2), 0.5), atol=2 / 63)  # 0.75 - 0.25 in unit min-max
    chunk = policy.predict_action_chunk(data)
    decoded = policy.normalizer.normalize(ACTION, chunk - 0.25)
    assert (decoded.abs() <= 1 + 1e-5).all()  # the state is added back to what was decoded


def test_lora_trains_only_adapters(tiny_vlm):
    pytest.importorskip("peft")
    policy = vlm_policy(tiny_vlm, lora_rank=4, freeze_vision=True)
    counts = policy.parameter_counts()
    full = vlm_policy(tiny_vlm).parameter_counts()["trainable"]
    assert 0 < counts["trainable"] < full / 2
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "vision" not in n for n in trainable)
    loss, _ = policy(batch())
    loss.backward()


def test_bf16_autocast_image_features_reach_the_merge_in_the_embeddings_dtype(tiny_vlm):
    """transformers before 5.2x merged the connector's bf16 output into fp32 token embeddings and failed
    under autocast (seen on a GPU with 5.17); the policy casts the connector's output, so it trains."""
    policy = vlm_policy(tiny_vlm)
    seen = []
    policy.model.model.connector.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = policy(batch())
    loss.backward()
    assert seen == [policy.model.get_input_embeddings().weight.dtype] == [torch.float32]


def test_for_inference_merges_lora_with_the_same_outputs(tiny_vlm, tmp_path):
    """evaluate.py folds the adapters into the weights: no LoRA modules remain, the logits stay, and
    the merged policy saves and reloads as a plain one."""
    from policy.checkpoint import load_policy, save_policy

    pytest.importorskip("peft")
    policy = vlm_policy(tiny_vlm, lora_rank=4).eval()
    torch.manual_seed(1)
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:  # LoRA starts as a no-op (B = 0); make the adapters matter
            torch.nn.init.normal_(parameter, std=0.1)
    inputs = policy.training_inputs(batch())
    inputs.pop("labels")
    with torch.no_grad():
        before = policy.model(**inputs).logits
        merged = policy.for_inference()
        after = merged.model(**inputs).logits
    assert merged is policy and not merged.training
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert not torch.allclose(before, vlm_policy(tiny_vlm).eval().model(**inputs).logits, atol=1e-3)  # adapters count
    assert torch.allclose(before, after, atol=1e-4)
    assert merged.predict_action_chunk(batch()).shape == (3, 4, 2)
    save_policy(merged, tmp_path / "merged")
    reloaded = load_policy(tmp_path / "merged")
    assert reloaded.config.vlm.lora_rank == 0
    with torch.no_grad():
        assert torch.equal(reloaded.model(**inputs).logits, after)


def test_checkpoint_round_trip(tiny_vlm, tmp_path):
    from policy.checkpoint import load_policy, save_policy

    policy = vlm_policy(tiny_vlm).eval()
    with torch.no_grad():  # weights unlike the saved model's, so a load that fell back to them would show
        for p in policy.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    data = batch()
    assert isinstance(loaded, VLMPolicy)
    assert torch.equal(loaded.predict_action_chunk(data), policy.predict_action_chunk(data))
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["config"]["backbone"]["type"] == "vlm"


def test_select_action_queues_the_decoded_chunk(tiny_vlm):
    policy = vlm_policy(tiny_vlm).eval()
    data = batch(n=2)
    obs = {OBS_STATE: data[OBS_STATE][:, -1], OBS_IMAGE: data[OBS_IMAGE][:, -1], "task": data["task"][:2]}
    first = policy.select_action(obs)
    second = policy.select_action(obs)
    chunk = policy.predict_action_chunk(data)
    assert torch.allclose(torch.stack([first, second], 1), chunk[:, :2])  # n_action_steps=2 from one plan


def test_offline_hub_name_fails_fast_and_clearly():
    from core.errors import MissingResourceError

    config = ModelConfig(backbone=BackboneConfig("vlm"), vlm=VLMConfig(model_name="someone/not-cached-vlm"))
    with pytest.raises(MissingResourceError, match="vlm.model_name=DIR"):
        build_policy(config, FEATURES)


def test_train_and_evaluate_pusht_vlm_end_to_end(tiny_vlm, tiny_text_model, tmp_path, monkeypatch, capsys):
    import evaluate
    import train
    from test_pusht import synthetic_arrays, write_zarr

    zarr_path = write_zarr(tmp_path / "pusht.zarr", synthetic_arrays(lengths=(6, 5)))
    run = tmp_path / "runs" / "pusht_vlm"
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--config", str(REPO / "configs" / "pusht_vlm.yaml"), "--run-dir", str(run), "--no-final-eval",
        "--set", f"vlm.model_name={tiny_vlm}", f"text.model_name={tiny_text_model}", f"data.root={tmp_path / 'data'}",
        f"data.path={zarr_path}", "train.steps=3", "train.batch_size=2", "train.warmup_steps=1", "eval.every=0",
        "env.max_episode_steps=10"])
    train.main()
    assert (run / "checkpoints" / "latest" / "model.safetensors").is_file()
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--env", "pusht", "--runs-dir", str(tmp_path / "runs"),
                                      "--episodes", "1", "--videos", "0"])
    evaluate.main()
    out = capsys.readouterr().out
    assert "vlm" in out and "| pusht |" in out


def test_config_refuses_what_the_vlm_cannot_write():
    from core.configuration import ConfigError
    from experiment.config import load_config

    assert load_config(REPO / "configs" / "pusht_vlm.yaml").backbone.type == "vlm"
    with pytest.raises(ConfigError, match="policy.normalization=min_max"):
        load_config(REPO / "configs" / "pusht_vlm.yaml", ["policy.normalization=mean_std"])
    with pytest.raises(ConfigError, match="vlm.n_bins"):
        load_config(REPO / "configs" / "pusht_vlm.yaml", ["vlm.n_bins=1"])
    with pytest.raises(ConfigError, match="backbone.type"):
        load_config(REPO / "configs" / "pusht_vlm.yaml", ["backbone.type=transformer"])


def test_bf16_inference_is_refused_for_the_vlm_with_what_to_do(tiny_vlm):
    from core.errors import UserError

    with pytest.raises(UserError, match="evaluate the VLM backbone in fp32"):
        vlm_policy(tiny_vlm).for_inference("bf16")


def test_benchmarks_measure_the_vlm_once_and_each_modular_head(tiny_vlm):
    from experiment.config import head_overrides

    heads = ["diffusion", "flow"]
    assert head_overrides(REPO / "configs" / "pusht_vlm.yaml", [f"vlm.model_name={tiny_vlm}"], heads) == [
        ("vlm", [f"vlm.model_name={tiny_vlm}"])]
    assert [label for label, _ in head_overrides(REPO / "configs" / "pusht.yaml", [], heads)] == heads


def test_latency_benchmark_runs_the_vlm(tiny_vlm):
    from benchmarks.latency import latency_table

    table = latency_table(str(REPO / "configs" / "pusht_vlm.yaml"),
                          [f"vlm.model_name={tiny_vlm}", "device=cpu"], ["diffusion"], calls=4)
    assert "| vlm |" in table


@pytest.mark.parametrize("size, millions", [("256M", 256), ("500M", 507)])
def test_random_real_size_smolvlms_have_the_hub_models_parameter_counts(size, millions):
    """The shapes the memory benchmark measures without the weights are SmolVLM2's: the parameter count
    lands on the published size (built on the meta device: nothing is allocated)."""
    from transformers import SmolVLMForConditionalGeneration

    from policy.tiny_vlm import smolvlm_config

    config, processor = smolvlm_config(size)
    with torch.device("meta"):
        model = SmolVLMForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, rel=0.03)
    assert processor.image_seq_len == 64  # 512 px, patch 16, pixel shuffle 4


def test_compiling_the_vlm_backbone_is_a_user_error(tiny_vlm):
    """evaluate.py --compile is built for the modular backbone: a one-line error, not a stack trace."""
    with pytest.raises(UserError, match="built for the modular backbone"):
        vlm_policy(tiny_vlm).for_inference().compile_for_inference()
