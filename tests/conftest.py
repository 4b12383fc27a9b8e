"""Shared fixtures: a tiny random DistilBERT saved locally, small configs and fake batches.

No test touches the network: hub access is switched off and non-loopback sockets refuse.
"""

import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402

from data.synthetic import synthetic_batch, unit_normalizer_stats  # noqa: E402
from encoders.tiny_text import save_tiny_text_model  # noqa: E402
from envs.features import Features  # noqa: E402
from experiment.config import Config, load_config  # noqa: E402

_real_connect = socket.socket.connect


def _loopback_only_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "localhost", "::1"):
        raise OSError(f"tests must not use the network (tried to connect to {address})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only_connect)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> str:
    """Directory of a random 2-layer SmolVLM (hidden 32, 32x32 images) and its processor."""
    from policy.tiny_vlm import save_tiny_vlm

    return save_tiny_vlm(tmp_path_factory.mktemp("tiny_smolvlm"))


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> str:
    """Directory of a random 1-layer DistilBERT (hidden 32) with a 20-word vocabulary."""
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny_distilbert"))


def small_config(text_model: str, head: str = "regression", overrides: list[str] | None = None) -> Config:
    """A model small enough for unit tests: d_model 32, one layer per fusion stage, 32x32 images."""
    base = [f"text.model_name={text_model}", f"action_head.type={head}", "policy.d_model=32",
            "policy.chunk_size=4", "policy.n_action_steps=2", "fusion.n_heads=2", "fusion.n_scene_layers=1",
            "fusion.n_state_layers=1", "fusion.dropout=0.0", "state.hidden=32", "env.image_size=[32,32]"]
    return load_config(None, base + (overrides or []))


SMALL_FEATURES = Features(state_dim=4, action_dim=3, cameras=("corner",), image_size=(32, 32))


def fake_batch(features: Features, config: Config, batch_size: int = 3, seed: int = 0) -> dict:
    """A training batch of the config's shapes (see data.synthetic), on the CPU."""
    return synthetic_batch(features, config.policy.n_obs_steps, config.policy.chunk_size, batch_size, seed=seed)


# Normalizer statistics that map [-1, 1] (min-max) and N(0, 1) (mean-std) to themselves.
unit_stats = unit_normalizer_stats
