"""Action chunks as the text a vision-language model writes (the VLA-0 recipe), and the grammar that
keeps its decoding valid.

A chunk of H x D normalized actions in [-1, 1] becomes H x D integers in [0, B), space-separated,
timestep-major: ``"255 0 511 ..."``. ``ActionGrammar`` is a ``transformers`` logits processor that
lets the model emit only what keeps its output a prefix of exactly that: digits and single spaces,
numbers below B without leading zeros, H x D of them, then end-of-sequence. Every decoded chunk
parses, for any tokenizer whose vocabulary holds the ten digits, whatever the model's weights.
"""

import copy
import re

import torch

DIGITS = frozenset("0123456789")


class ActionText:
    """Chunks of normalized actions <-> text: ``B = n_bins`` uniform levels over [-1, 1], both ends included.

    Args:
        chunk_size: H, actions per chunk.
        action_dim: D, numbers per action.
        n_bins: B; an integer k stands for ``-1 + 2 k / (B - 1)``, so the round trip errs by at most
            half a step, ``1 / (B - 1)``.
    """

    def __init__(self, chunk_size: int, action_dim: int, n_bins: int = 512):
        if chunk_size < 1 or action_dim < 1 or n_bins < 2:
            raise ValueError("chunk_size and action_dim must be >= 1 and n_bins >= 2")
        self.chunk_size, self.action_dim, self.n_bins = chunk_size, action_dim, n_bins
        self.count = chunk_size * action_dim

    def to_integers(self, chunk: torch.Tensor) -> torch.Tensor:
        """(..., H, D) values in [-1, 1] (clamped) -> (..., H, D) long integers in [0, B)."""
        return torch.round((chunk.float().clamp(-1, 1) + 1) / 2 * (self.n_bins - 1)).long()

    def from_integers(self, integers: torch.Tensor) -> torch.Tensor:
        """(..., H, D) integers in [0, B) -> float32 values in [-1, 1]."""
        return integers.float() / (self.n_bins - 1) * 2 - 1

    def encode(self, chunk: torch.Tensor) -> str:
        """One (H, D) chunk -> its text."""
        if tuple(chunk.shape) != (self.chunk_size, self.action_dim):
            raise ValueError(f"a chunk is ({self.chunk_size}, {self.action_dim}); got {tuple(chunk.shape)}")
        return " ".join(str(int(k)) for k in self.to_integers(chunk).reshape(-1))

    def decode(self, text: str) -> torch.Tensor:
        """Text -> (H, D) float32 chunk; ``ValueError`` unless it is exactly H x D integers in [0, B)."""
        if not re.fullmatch(r" ?\d+( \d+)*", text.strip("\n")):
            raise ValueError(f"not a space-separated list of integers: {text[:80]!r}")
        numbers = [int(word) for word in text.split()]
        if len(numbers) != self.count or max(numbers) >= self.n_bins:
            raise ValueError(f"expected {self.count} integers in [0, {self.n_bins}), got {len(numbers)} "
                             f"(largest {max(numbers)})")
        return self.from_integers(torch.tensor(numbers).reshape(self.chunk_size, self.action_dim))

    # The grammar as a small state machine over characters: (numbers finished, the number being
    # written, anything written yet). None is a dead state: no continuation is valid.
    START: tuple[int, str, bool] = (0, "", False)

    def advance(self, state: tuple[int, str, bool] | None, piece: str) -> tuple[int, str, bool] | None:
        """The state after writing ``piece``, or None if that breaks the grammar."""
        for char in piece:
            if state is None:
                return None
            done, word, started = state
            if char == " ":
                if not started:  # one optional leading space, as many tokenizers write it
                    state = (0, "", True)
                elif word == "" or done + 1 >= self.count:  # two spaces, or a space after the last number
                    state = None
                else:
                    state = (done + 1, "", True)
            elif char in DIGITS:
                grown = word + char
                state = None if word == "0" or int(grown) >= self.n_bins else (done, grown, True)  # no leading 0
            else:
                state = None
        return state

    def complete(self, state: tuple[int, str, bool] | None) -> bool:
        """Whether the text that led to ``state`` is a whole chunk (end-of-sequence may follow)."""
        return state is not None and state[0] == self.count - 1 and state[1] != ""

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a valid prefix of a chunk's text."""
        return self.advance(self.START, text) is not None


class ActionGrammar:
    """A ``transformers`` logits processor: only tokens that keep the generated text a valid prefix.

    Args:
        tokenizer: the model's tokenizer (the text of every token is computed once).
        action_text: what a valid output is.
        prompt_length: tokens before the generated ones in ``input_ids`` (left padding included).
        eos_token_ids: the end-of-sequence ids the model may stop with once the chunk is complete.
    """

    def __init__(self, tokenizer, action_text: ActionText, prompt_length: int, eos_token_ids: list[int]):
        self.action_text, self.prompt_length, self.eos = action_text, prompt_length, list(eos_token_ids)
        self.pieces: dict[int, str] = {}  # token id -> its text, for tokens made of digits and spaces only
        for token_id in range(len(tokenizer)):
            piece = tokenizer.decode([token_id])
            if piece and set(piece) <= DIGITS | {" "} and token_id not in self.eos:
                self.pieces[token_id] = piece
        texts = set(self.pieces.values())
        separable = " " in texts or all(f" {d}" in texts for d in DIGITS)
        if not (set(DIGITS) <= texts and separable and self.eos):
            raise ValueError("the tokenizer cannot spell each digit and a space as tokens (or has no "
                             "end-of-sequence token): constrained action decoding needs them")

    def for_prompt(self, prompt_length: int) -> "ActionGrammar":
        """This grammar for outputs that start after ``prompt_length`` tokens (the vocabulary table is
        shared, not recomputed): one per ``generate`` call, so no call changes another's."""
        grammar = copy.copy(self)
        grammar.prompt_length = prompt_length
        return grammar

    def state_of(self, generated: list[int]):
        state = self.action_text.START
        for token_id in generated:
            piece = self.pieces.get(token_id)
            state = None if piece is None else self.action_text.advance(state, piece)
        return state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for row, generated in enumerate(input_ids[:, self.prompt_length:].tolist()):
            state = self.state_of(generated)
            if state is None:  # cannot happen when this processor chose every token; stop cleanly
                allowed[row, self.eos] = True
                continue
            if self.action_text.complete(state):
                allowed[row, self.eos] = True
            for token_id, piece in self.pieces.items():
                if self.action_text.advance(state, piece) is not None:
                    allowed[row, token_id] = True
        return scores.masked_fill(~allowed, float("-inf"))
