"""Save and load a policy as one directory, without unpickling anything.

    run/checkpoint/
        model.safetensors   trained weights + normalizer statistics (the frozen language model is
                            not part of the policy's state: it reloads from text.model_name)
        config.json         the resolved experiment config and the features (shapes)
        stats.json          normalizer statistics, for people to read
"""

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.configuration import from_dict, to_dict
from core.schema import Config
from envs.features import Features
from policy.vla_policy import VLAPolicy

WEIGHTS, CONFIG, STATS = "model.safetensors", "config.json", "stats.json"


def save_policy(policy: VLAPolicy, directory: str | Path, extra: dict[str, dict] | None = None) -> Path:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact.

    ``extra`` maps file names to dicts of tensors and plain values (e.g. optimizer state for
    resuming), saved with torch.save and meant to be read back with ``weights_only=True``.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    save_file(state, str(tmp / WEIGHTS))
    meta = {"config": to_dict(policy.config), "features": asdict(policy.features)}
    (tmp / CONFIG).write_text(json.dumps(meta, indent=2))
    (tmp / STATS).write_text(json.dumps(policy.normalizer.to_json(), indent=2))
    for name, content in (extra or {}).items():
        torch.save(content, tmp / name)
    if directory.exists():  # swap in the new directory, then drop the old one
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    return directory


def load_config_and_features(directory: str | Path) -> tuple[Config, Features]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not an EasyVLA checkpoint (no {CONFIG})")
    meta = json.loads(path.read_text())
    features = meta["features"]
    features = Features(features["state_dim"], features["action_dim"], tuple(features["cameras"]),
                        tuple(features["image_size"]))
    return from_dict(Config, meta["config"]), features


def load_weights(policy: VLAPolicy, directory: str | Path) -> None:
    """Load a checkpoint's safetensors weights into an existing policy of the same config."""
    state = load_file(str(Path(directory) / WEIGHTS), device=str(next(policy.parameters()).device))
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {directory} does not match its config: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")


def load_policy(directory: str | Path, device: str | torch.device = "cpu") -> VLAPolicy:
    """Rebuild the policy from config.json and load its safetensors weights (strictly)."""
    config, features = load_config_and_features(directory)
    policy = VLAPolicy(config, features)
    load_weights(policy, directory)
    return policy.to(device).eval()
