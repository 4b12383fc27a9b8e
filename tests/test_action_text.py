"""Actions as text for a VLM (the VLA-0 recipe): the codec, its grammar, and constrained decoding that
always yields a valid chunk, whatever the model's scores."""

import random

import pytest
import torch

from policy.action_text import ActionGrammar, ActionText


def byte_level_tokenizer(split_digits: bool):
    """A small byte-level BPE tokenizer, like a VLM's: with ``split_digits`` every digit is its own token
    (SmolLM's way); without, merges learn multi-digit and space-digit tokens (" 12", "511")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(str(rng.randrange(512)) for _ in range(40)) for _ in range(200)]
    corpus += ["reach the goal with the gripper", "push the T-shaped block onto the target"] * 50
    tokenizer = Tokenizer(models.BPE())
    splits = [pre_tokenizers.ByteLevel(add_prefix_space=False)]
    if split_digits:
        splits.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splits)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>")


@pytest.mark.parametrize("n_bins", [2, 10, 256, 512])
def test_round_trip_within_half_a_step(n_bins):
    codec = ActionText(chunk_size=5, action_dim=3, n_bins=n_bins)
    chunk = torch.rand(5, 3, generator=torch.Generator().manual_seed(n_bins)) * 2 - 1
    chunk[0] = torch.tensor([-1.0, 1.0, 0.0])
    text = codec.encode(chunk)
    assert len(text.split()) == 15 and all(0 <= int(w) < n_bins for w in text.split())
    assert (codec.decode(text) - chunk).abs().max() <= 1 / (n_bins - 1) + 1e-6
    assert codec.encode(torch.full((5, 3), 7.0)).split()[0] == str(n_bins - 1)  # out of range: clamped


@pytest.mark.parametrize("text", ["", "1 2", "1 2 3 4 5 6 7", "1  2 3 4 5 6", "1 2 3 4 5 512", "1 2 3 x 5 6",
                                  "1 2 3 4 5 -6"])
def test_decode_refuses_anything_but_the_exact_count_in_range(text):
    with pytest.raises(ValueError):
        ActionText(chunk_size=2, action_dim=3, n_bins=512).decode(text)


def test_the_grammar_accepts_exactly_the_prefixes_of_valid_chunks():
    codec = ActionText(chunk_size=2, action_dim=2, n_bins=512)
    for prefix in ["", " ", "5", "51", "511", "0", "0 1", "12 0 511 3", " 1 2 3 4"]:
        assert codec.accepts(prefix), prefix
    for bad in ["  ", "512", "00", "01", "1  2", "1 2 3 4 ", "1 2 3 4 5", "a", "1,2", " 1 2 3 4 5"]:
        assert not codec.accepts(bad), bad
    assert codec.complete(codec.advance(codec.START, "1 2 3 4"))
    assert not codec.complete(codec.advance(codec.START, "1 2 3"))
    assert not codec.complete(codec.advance(codec.START, "1 2 3 "))


@pytest.mark.parametrize("split_digits", [True, False])
@pytest.mark.parametrize("bias", ["none", "eos", "space", "letters"])
def test_constrained_decoding_always_yields_a_valid_chunk(split_digits, bias):
    """Random scores stand in for an untrained model; biased ones push towards stopping early, runs of
    spaces or words. Every decode parses into H x D integers in [0, B)."""
    tokenizer = byte_level_tokenizer(split_digits)
    codec = ActionText(chunk_size=4, action_dim=2, n_bins=512)
    prompt = torch.tensor([tokenizer.encode("reach the goal")])
    grammar = ActionGrammar(tokenizer, codec, prompt.shape[1], [tokenizer.eos_token_id])
    favoured = {"none": [], "eos": [tokenizer.eos_token_id], "space": tokenizer.encode(" "),
                "letters": tokenizer.encode("the goal")}[bias]
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        ids = prompt.clone()
        for _ in range(100):
            scores = torch.randn(1, len(tokenizer), generator=g)
            scores[0, favoured] += 50.0
            scores = grammar(ids, scores)
            token = torch.multinomial(torch.softmax(scores, -1), 1, generator=g) if trial % 2 else scores.argmax(-1,
                                                                                                              True)
            if int(token) == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
        text = tokenizer.decode(ids[0, prompt.shape[1]:].tolist())
        chunk = codec.decode(text)
        assert chunk.shape == (4, 2) and chunk.abs().max() <= 1


def test_a_tokenizer_that_cannot_spell_digits_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"<eos>": 0, "[UNK]": 1, "reach": 2, "1": 3}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<eos>", unk_token="[UNK]")
    with pytest.raises(ValueError, match="cannot spell each digit"):
        ActionGrammar(tokenizer, ActionText(2, 2), 0, [0])


def test_a_grammar_for_one_prompt_leaves_the_shared_one_untouched():
    """The policy builds the vocabulary table once and derives a processor per generate call: two calls
    with prompts of different lengths must not see each other's offset."""
    tokenizer = byte_level_tokenizer(True)
    shared = ActionGrammar(tokenizer, ActionText(chunk_size=2, action_dim=2), 0, [tokenizer.eos_token_id])
    prompt = torch.tensor([tokenizer.encode("reach")])
    scores = torch.zeros(1, len(tokenizer))
    own = shared.for_prompt(prompt.shape[1])
    assert shared.prompt_length == 0 and own.pieces is shared.pieces
    digits = tokenizer.convert_tokens_to_ids(list("0123456789"))
    assert torch.isfinite(own(prompt, scores)[0, digits]).all()  # nothing generated yet: digits allowed
    only_eos = torch.isfinite(shared(prompt, scores)[0])  # the shared one reads "reach" as its output
    assert only_eos.nonzero().flatten().tolist() == [tokenizer.eos_token_id]
