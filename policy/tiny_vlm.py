"""Random SmolVLMs saved like hub models, for machines without the hub: a tiny one (the SmolVLM2
architecture class, a few thousand parameters) for tests, and ones with SmolVLM2-256M's and -500M's
shapes (``python -m policy.tiny_vlm DIR --size 256M``) to measure memory and step time without the
weights. They go through the same ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained``
path a user's ``HuggingFaceTB/SmolVLM2-256M-Video-Instruct`` takes, with the real processor logic (chat
template, image placeholders expanded to image tokens, the image processor; 32x32 images for the tiny
one, 512x512 for the real sizes).

The tokenizer writes one token per character, as SmolLM2's tokenizer does for digits.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_SIZE, PATCH, SCALE = 32, 8, 2  # 16 patches, pixel-shuffled by 2: 4 image tokens per image
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
           "<global-img>", "<video>"]
# SmolVLM2's chat template: "User:<image>text<end_of_utterance>\nAssistant:"
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def tiny_tokenizer():
    """One token per printable ASCII character and newline, plus SmolVLM's special tokens."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(SPECIAL + chars)}
    backend = Tokenizer(models.BPE(vocab, merges=[], unk_token="<|endoftext|>"))
    backend.decoder = decoders.Fuse()  # characters join without separators
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>", additional_special_tokens=SPECIAL[3:])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@dataclass(frozen=True)
class Architecture:
    """The sizes that set a SmolVLM's memory and compute (the rest is SmolVLM's defaults)."""

    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch: int
    scale: int  # pixel shuffle: (image_size / patch)^2 / scale^2 image tokens per image
    vocab_size: int | None  # None: the character tokenizer's own (tiny); else the real model's rows


ARCHITECTURES = {
    "tiny": Architecture(32, 64, 2, 2, 1, 32, 64, 1, 2, IMAGE_SIZE, PATCH, SCALE, None),
    # SmolVLM2-256M/500M-Video-Instruct: SigLIP base/16 at 512 px, SmolLM2-135M / -360M, vocabulary 49280.
    "256M": Architecture(576, 1536, 30, 9, 3, 768, 3072, 12, 12, 512, 16, 4, 49280),
    "500M": Architecture(960, 2560, 32, 15, 5, 768, 3072, 12, 12, 512, 16, 4, 49280),
}


def save_tiny_vlm(directory: str | Path, seed: int = 0) -> str:
    """Write a random 2-layer SmolVLM (hidden 32) and its processor to ``directory``; returns it."""
    return save_random_smolvlm(directory, "tiny", seed)


def smolvlm_config(size: str):
    """The ``SmolVLMConfig`` and ``SmolVLMProcessor`` of a random SmolVLM of ``size`` (``ARCHITECTURES``)."""
    from transformers import (
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    arch = ARCHITECTURES[size]
    tokenizer = tiny_tokenizer()
    image = {"longest_edge": arch.image_size}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=image, max_image_size=image, do_image_splitting=False),
        tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(size=image, max_image_size=image),
        image_seq_len=(arch.image_size // arch.patch) ** 2 // arch.scale**2, chat_template=CHAT_TEMPLATE)
    tied = arch.vocab_size is None
    text = LlamaConfig(vocab_size=arch.vocab_size or len(tokenizer), hidden_size=arch.text_hidden,
                       intermediate_size=arch.text_intermediate, num_hidden_layers=arch.text_layers,
                       num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_kv_heads,
                       max_position_embeddings=8192, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=tied)
    vision = SmolVLMVisionConfig(hidden_size=arch.vision_hidden, intermediate_size=arch.vision_intermediate,
                                 num_hidden_layers=arch.vision_layers, num_attention_heads=arch.vision_heads,
                                 image_size=arch.image_size, patch_size=arch.patch)
    config = SmolVLMConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), scale_factor=arch.scale,
                           image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                           pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=tied,
                           vocab_size=text.vocab_size)
    return config, processor


def save_random_smolvlm(directory: str | Path, size: str = "tiny", seed: int = 0) -> str:
    """Write a randomly initialized SmolVLM of ``size`` (``ARCHITECTURES``) and its processor to
    ``directory``. The real-size ones have SmolVLM2's shapes (so its memory and step time) but not its
    weights or tokenizer: the character tokenizer spells text in more tokens than SmolLM2's (digits,
    one token each in both, are the same), so prompts are a little longer than the real ones."""
    from transformers import SmolVLMForConditionalGeneration

    config, processor = smolvlm_config(size)
    torch.manual_seed(seed)
    SmolVLMForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a random SmolVLM (for tests and memory benchmarks).")
    parser.add_argument("directory")
    parser.add_argument("--size", default="tiny", choices=sorted(ARCHITECTURES))
    args = parser.parse_args()
    print(save_random_smolvlm(args.directory, args.size))
