"""Save and load a policy as one directory, without unpickling anything.

    run/checkpoint/
        model.safetensors   trained weights + normalizer statistics (the modular backbone's frozen text model is
                            not part of the policy's state: it reloads from text.model_name)
        config.json         the resolved experiment config (the policy reads its model sections), the
                            features (shapes) and the SHA-256 of model.safetensors (checked on load:
                            a damaged file says so)
        stats.json          normalizer statistics, for people to read

Replacing a checkpoint swaps directories (``core.files.swap_directory``); a crash between its two
renames leaves no ``NAME`` but a complete ``.NAME.old``. Loads read it from there (without writing
anything), and the next save or resume, which hold the run's lock, rename it back. Weights with NaN
or inf are never written.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from core.configuration import ConfigError, from_dict, to_dict
from core.errors import DamagedFileError, MissingResourceError, UserError
from core.files import old_path, swap_directory
from envs.features import Features
from policy.backbones import Policy, build_policy
from policy.config import MODEL_SECTIONS, ModelConfig

WEIGHTS, CONFIG, STATS = "model.safetensors", "config.json", "stats.json"


class NonFiniteWeightsError(UserError):
    """Weights that hold NaN or inf: a diverged training run, never saved and never evaluated."""


def readable(directory: str | Path) -> Path:
    """Where to read ``directory`` from: itself, or its complete ``.NAME.old`` if a crash left only that."""
    directory = Path(directory)
    if not directory.exists() and (old_path(directory) / CONFIG).is_file():
        return old_path(directory)
    return directory


def recover(directory: str | Path) -> Path:
    """Finish a swap a crash interrupted: with no ``directory`` but a complete ``.NAME.old``, restore it.

    Writes: only for a process that holds the run's lock (a save, a resume).
    """
    directory = Path(directory)
    if readable(directory) != directory:
        os.replace(old_path(directory), directory)
    return directory


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the half-written ``.NAME.*`` folders that killed saves leave beside ``directory``.

    Only call this while holding the run's lock (no other process can be saving).
    """
    directory = recover(directory)
    stale = [p for p in directory.parent.glob(f".{directory.name}.*") if p.is_dir() and p != old_path(directory)]
    if directory.exists():
        stale += [old_path(directory)] if old_path(directory).exists() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors in ``state`` holding NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_policy(policy: Policy, directory: str | Path, run_config: dict | None = None,
                extra: dict[str, dict] | None = None) -> Path:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact.

    ``run_config`` is the experiment config the policy was trained with (plain data, it holds the
    model's sections too); without it, only the model's sections are recorded.

    ``extra`` maps file names to dicts of tensors and plain values (e.g. optimizer state for
    resuming), saved with torch.save and meant to be read back with ``weights_only=True``.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    state, seen = {}, set()
    for name, tensor in policy.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.numel() and tensor.data_ptr() in seen:  # tied weights (a VLM's embeddings and output layer):
            tensor = tensor.clone()                        # safetensors stores each name's own copy
        seen.add(tensor.data_ptr())
        state[name] = tensor
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"refusing to save {directory}: {len(bad)} tensors hold NaN or inf "
                                    f"(e.g. {bad[0]}); training diverged")
    config = run_config if run_config is not None else to_dict(policy.config)
    if any(config.get(name) != section for name, section in to_dict(policy.config).items()):
        raise ValueError("run_config's model sections differ from the policy's own config")
    recover(directory)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    weights = save_safetensors(state)  # serialized once: written and hashed from the same bytes
    (tmp / WEIGHTS).write_bytes(weights)
    meta = {"config": config, "features": policy.features.to_json(),
            "weights_sha256": _sha256(weights)}
    (tmp / CONFIG).write_text(json.dumps(meta, indent=2))
    (tmp / STATS).write_text(json.dumps(policy.normalizer.to_json(), indent=2))
    for name, content in (extra or {}).items():
        torch.save(content, tmp / name)
    return swap_directory(tmp, directory)


def read_meta(directory: str | Path) -> dict:
    """A checkpoint's config.json: ``{"config": experiment config, "features": shapes, "weights_sha256"}``."""
    path = readable(directory) / CONFIG
    if not path.is_file():
        raise MissingResourceError(f"{directory} is not an EasyVLA checkpoint (no {CONFIG})")
    try:
        meta = json.loads(path.read_text())
        meta["features"]["state_dim"], meta["config"]["policy"]  # noqa: B018 (the keys every checkpoint has)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise DamagedFileError(f"{path} is damaged (not the JSON a checkpoint writes); use another checkpoint, "
                               "e.g. checkpoints/best or checkpoints/latest") from None
    return meta


def load_model_config_and_features(directory: str | Path) -> tuple[ModelConfig, Features]:
    """The model sections and shapes a checkpoint's policy is rebuilt from."""
    meta = read_meta(directory)
    sections = {name: meta["config"][name] for name in MODEL_SECTIONS if name in meta["config"]}
    try:
        return from_dict(ModelConfig, sections), Features.from_json(meta["features"])
    except ConfigError as error:
        raise DamagedFileError(f"{Path(directory) / CONFIG} holds a config this version cannot load "
                               f"({error})") from None


def load_weights(policy: Policy, directory: str | Path) -> None:
    """Load a checkpoint's safetensors weights into an existing policy of the same config.

    The file's SHA-256 must match the one written beside it, and every tensor must be finite.
    """
    directory = readable(directory)
    path = directory / WEIGHTS
    if not path.is_file():
        raise MissingResourceError(f"checkpoint {directory} has no {WEIGHTS}")
    data = path.read_bytes()  # read once: hashed, then parsed
    expected = read_meta(directory).get("weights_sha256")  # absent in checkpoints from before it was recorded
    if expected is not None and _sha256(data) != expected:
        raise DamagedFileError(f"{path} is damaged (its SHA-256 differs from the one saved in {CONFIG}); "
                               "use another checkpoint, e.g. checkpoints/best or checkpoints/latest")
    try:
        state = load_safetensors(data)
    except Exception as error:  # safetensors raises its own error type for truncated or garbled files
        raise DamagedFileError(f"{path} cannot be read ({str(error).splitlines()[0]}); use another checkpoint") from None
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"{path} holds NaN or inf in {len(bad)} tensors (e.g. {bad[0]}): the run "
                                    "diverged; evaluate an earlier checkpoint")
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DamagedFileError(f"checkpoint {directory} does not match its config: missing {sorted(missing)[:5]}, "
                               f"unexpected {sorted(unexpected)[:5]}")


def load_policy(directory: str | Path, device: str | torch.device = "cpu") -> Policy:
    """Rebuild the policy from config.json and load its safetensors weights (strictly)."""
    config, features = load_model_config_and_features(directory)
    policy = build_policy(config, features)
    load_weights(policy, directory)
    return policy.to(device).eval()
