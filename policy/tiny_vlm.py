"""A tiny random SmolVLM (the SmolVLM2 architecture class, a few thousand parameters), saved like a hub
model: for tests and benchmarks on machines without the hub. It goes through the same
``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` path a user's
``HuggingFaceTB/SmolVLM2-256M-Video-Instruct`` takes, with the real processor logic (chat template,
image placeholders expanded to image tokens, the image processor) at a 32x32 image size.

The tokenizer writes one token per character, as SmolLM2's tokenizer does for digits.
"""

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


def save_tiny_vlm(directory: str | Path, seed: int = 0) -> str:
    """Write a random 2-layer SmolVLM (hidden 32) and its processor to ``directory``; returns it."""
    from transformers import (
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    tokenizer = tiny_tokenizer()
    size = {"longest_edge": IMAGE_SIZE}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=size, max_image_size=size, do_image_splitting=False),
        tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size),
        image_seq_len=(IMAGE_SIZE // PATCH) ** 2 // SCALE**2, chat_template=CHAT_TEMPLATE)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    vision = SmolVLMVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=IMAGE_SIZE, patch_size=PATCH)
    config = SmolVLMConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), scale_factor=SCALE,
                           image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                           pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    SmolVLMForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)
