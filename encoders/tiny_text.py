"""A tiny random DistilBERT with a 20-word vocabulary, saved like a hub model: for tests and for
benchmarks on machines without the hub (the text encoder is frozen and runs once per instruction,
so its size does not change training or control-step costs)."""

from pathlib import Path

import torch

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "reach", "the", "goal", "push", "block", "to",
              "target", "open", "drawer", "pick", "place", "a", "red", "ball", "T"]


def tiny_tokenizer():
    """A BERT-style WordPiece tokenizer over TINY_VOCAB, built with the tokenizers library.

    Built from a tokenizers object rather than ``DistilBertTokenizerFast(vocab_file=...)``: newer
    transformers (5.x) ignore that argument and map every word to [UNK], which would give every
    instruction the same embedding.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import DistilBertTokenizerFast

    vocab = {word: i for i, word in enumerate(TINY_VOCAB)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return DistilBertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def save_tiny_text_model(directory: str | Path, seed: int = 0) -> str:
    """Write a random 1-layer DistilBERT (hidden 32) and its tokenizer to ``directory``; returns it."""
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(TINY_VOCAB), dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    DistilBertModel(config).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return str(directory)
