"""Strict config loading: unknown keys, wrong types, invalid combinations, overrides, shipped YAMLs."""

from pathlib import Path

import pytest

from action_head.regression import RegressionHeadConfig
from core.configuration import ConfigError, describe
from experiment.config import Config, load_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_load():
    config = load_config()
    assert config.action_head.type == "diffusion" and config.policy.chunk_size == 16


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "policy:\n  chunk_sise: 8\n"))
    message = str(error.value)
    assert "policy.chunk_sise" in message and "chunk_size" in message and "Did you mean" in message


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(write(tmp_path, "trian:\n  lr: 1.0\n"))


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="policy.chunk_size: expected an integer"):
        load_config(write(tmp_path, "policy:\n  chunk_size: sixteen\n"))
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_config(write(tmp_path, "train:\n  lr: fast\n"))
    with pytest.raises(ConfigError, match="is not one of"):
        load_config(write(tmp_path, "vision:\n  norm: layer\n"))


def test_invalid_combination_is_an_error():
    with pytest.raises(ConfigError, match="n_action_steps=20 must be in"):
        load_config(None, ["policy.n_action_steps=20"])
    with pytest.raises(ConfigError, match="re-plans every step"):
        load_config(None, ["policy.ensemble=act"])


def test_unknown_head_type_lists_known_heads():
    with pytest.raises(ConfigError, match="known: autoregressive, diffusion, flow, regression"):
        load_config(None, ["action_head.type=transformer"])


def test_overrides_and_head_swap(tmp_path):
    path = write(tmp_path, "action_head:\n  type: diffusion\n  num_inference_steps: 5\ntrain:\n  lr: 1e-3\n")
    config = load_config(path, ["action_head.type=regression", "train.lr=3e-4", "action_head.loss=mse"])
    assert isinstance(config.action_head, RegressionHeadConfig) and config.action_head.loss == "mse"
    assert config.train.lr == pytest.approx(3e-4)
    # An option of the old head does not survive the swap; one for the new head is checked.
    with pytest.raises(ConfigError, match="unknown config key 'action_head.num_inference_steps'"):
        load_config(path, ["action_head.type=regression", "action_head.num_inference_steps=3"])


def test_head_swap_keeps_options_given_before_it_on_the_command_line(tmp_path):
    """`--set action_head.denoiser=mlp action_head.type=flow` once silently trained the U-Net."""
    path = write(tmp_path, "action_head:\n  type: diffusion\n  num_inference_steps: 5\n")
    config = load_config(path, ["action_head.denoiser=mlp", "action_head.type=flow", "action_head.denoiser=unet",
                                "action_head.num_inference_steps=4"])
    assert config.action_head.type == "flow" and config.action_head.num_inference_steps == 4
    assert config.action_head.denoiser == "unet"  # options apply in their order, after the swap
    config = load_config(path, ["action_head.denoiser=mlp", "action_head.type=flow"])
    assert config.action_head.denoiser == "mlp" and config.action_head.num_inference_steps != 5


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


def test_every_field_has_a_doc():
    lines = describe(Config)
    assert len(lines) > 30
    undocumented = [line for line in lines if line.rstrip().endswith(":")]
    assert not undocumented, undocumented


def test_aux_state_adds_the_privileged_state_to_the_features_and_needs_a_benchmark_that_records_it(monkeypatch):
    assert load_config(None).features.privileged_dim == 0
    config = load_config(None, ["policy.aux_state_weight=0.5"])
    assert config.features.privileged_dim == 39 and config.features.state_dim == 4
    assert load_config(None, ["env.name=pusht", "env.tasks=[pusht]", "env.cameras=[top]", "env.image_size=[96,96]",
                              "env.state=agent_pos", "policy.aux_state_weight=1"]).features.privileged_dim == 5
    with pytest.raises(ConfigError, match="policy.aux_state_weight must be in"):
        load_config(None, ["policy.aux_state_weight=-1"])
    from envs.metaworld import MetaWorld

    monkeypatch.setattr(MetaWorld, "privileged_dim", 0)
    with pytest.raises(ConfigError, match="record no simulator state"):
        load_config(None, ["policy.aux_state_weight=1"])
