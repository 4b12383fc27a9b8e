"""The vision-language backbone (``backbone.type: vlm``): a pretrained VLM writes the chunk as text.

The VLA-0 recipe on any Hugging Face image-text-to-text model (default SmolVLM2-256M):

    user:      <camera images> "push the T-shaped block onto the target. State: 301 122"
    assistant: "255 0 511 ... 17"   H x D integers in [0, B), the normalized chunk (policy.action_text)

Training is next-token cross-entropy on the assistant's tokens only (the prompt and the images are
context); optionally some action tokens are hidden in the input while their targets stay
(``vlm.mask_prob``). Decoding is greedy under ``ActionGrammar``, so every output parses into a chunk.
Normalization, relative actions, the action queue and ensembling are the policy's own (``Policy``).
"""

from dataclasses import replace

import torch
import torch.nn.functional as F

from core.errors import MissingResourceError, UserError
from core.hub import load_pretrained, running_command
from core.keys import ACTION, OBS_IMAGE, OBS_STATE, TASK
from core.rng import Generators
from envs.features import Features
from policy.action_text import ActionGrammar, ActionText
from policy.base import POLICIES, Policy
from policy.config import ModelConfig

IGNORE = -100  # the label cross-entropy skips (transformers' convention)


def load_vlm(name: str) -> tuple[torch.nn.Module, object]:
    """(model, processor) from a local directory, the local cache, or the hub; a clear error offline."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    def load(name: str, local_files_only: bool):
        try:
            return (AutoModelForImageTextToText.from_pretrained(name, local_files_only=local_files_only),
                    AutoProcessor.from_pretrained(name, local_files_only=local_files_only))
        except ImportError as error:  # e.g. SmolVLM's processor needs num2words
            raise MissingResourceError(f"vlm.model_name: {error}; pip install -e '.[vlm]'") from None

    hint = ("download it on a machine with internet (huggingface-cli download MODEL --local-dir DIR), copy DIR "
            f"here, then {running_command()} ... --set vlm.model_name=DIR")
    return load_pretrained(name, "vlm.model_name", "vision-language model", load, hint)


def add_lora(model: torch.nn.Module, rank: int, alpha: int) -> torch.nn.Module:
    """LoRA adapters (peft) on the language model's attention and MLP projections; the rest frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise MissingResourceError("vlm.lora_rank > 0 needs peft: pip install -e '.[vlm]'") from None
    targets = r"(?!.*vision).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets))


def match_image_features_to_text_dtype(model: torch.nn.Module) -> None:
    """Under autocast the connector writes bf16 image features, while the token embeddings stay in the
    weights' dtype; transformers before 5.2x then refuses to merge them (``Index put requires the source
    and destination dtypes match``). Casting the connector's output as newer versions do fixes both."""
    connector = getattr(getattr(model, "model", None), "connector", None)
    if connector is None:
        return
    embeddings = model.get_input_embeddings()  # read at each call: the policy may be cast after this
    connector.register_forward_hook(lambda module, inputs, output: output.to(embeddings.weight.dtype))


@POLICIES.register("vlm")
class VLMPolicy(Policy):
    """
    Args:
        config: the model's sections of the experiment config; reads ``policy`` and ``vlm``.
        features: observation and action shapes, from the env or dataset.
    """

    def __init__(self, config: ModelConfig, features: Features):
        super().__init__(config, features)
        vc = config.vlm
        model, self.processor = load_vlm(vc.model_name)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # prompts end where generation starts
        if hasattr(self.processor, "image_processor") and hasattr(self.processor.image_processor, "do_image_splitting"):
            self.processor.image_processor.do_image_splitting = vc.image_splitting
        if vc.freeze_vision:
            for name, parameter in model.named_parameters():
                if "vision" in name:
                    parameter.requires_grad_(False)
        match_image_features_to_text_dtype(model)
        if vc.gradient_checkpointing:  # transformers >= 5.2x: activation_...; older: gradient_... only
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        self.model = add_lora(model, vc.lora_rank, vc.lora_alpha) if vc.lora_rank > 0 else model
        self.action_text = ActionText(config.policy.chunk_size, features.action_dim, vc.n_bins)
        self.state_text = ActionText(1, features.state_dim, vc.n_bins)
        end = self.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
        self.eos_ids = sorted({i for i in (end, self.tokenizer.eos_token_id)
                               if isinstance(i, int) and i != self.tokenizer.unk_token_id})
        self.end_id = self.eos_ids[0] if end in (None, self.tokenizer.unk_token_id) else end
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_id
        self._grammar: ActionGrammar | None = None  # built on first decode (it reads the whole vocabulary)
        # Every token writes at least one character: digits of each number, a separator, end-of-sequence.
        self.max_new_tokens = self.action_text.count * (len(str(vc.n_bins - 1)) + 1) + 1

    # ---- prompts ----------------------------------------------------------------------------
    def _prompts(self, obs: dict) -> dict[str, torch.Tensor]:
        """The user turns of a batch (images, instruction, state), tokenized and left-padded."""
        vc = self.config.vlm
        state = self.normalizer.normalize(OBS_STATE, obs[OBS_STATE].float())[:, -1]
        texts, images = [], []
        for i, instruction in enumerate(obs[TASK]):
            text = instruction
            if vc.state_in_prompt:
                text += " State: " + self.state_text.encode(state[i].clamp(-1, 1)[None].cpu())
            row_images = []
            if self.features.has_images:  # (T, N, 3, H, W) -> T x N frames, oldest first
                row_images = list(obs[OBS_IMAGE][i].flatten(0, 1).cpu())
            messages = [{"role": "system", "content": [{"type": "text", "text": vc.system_prompt}]}] if vc.system_prompt else []
            messages.append({"role": "user", "content": [{"type": "image"}] * len(row_images) + [{"type": "text", "text": text}]})
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True))
            images.append(row_images)
        inputs = self.processor(text=texts, images=images if self.features.has_images else None,
                                return_tensors="pt", padding=True)
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in inputs.items()}

    @staticmethod
    def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids that skip the left padding, as ``generate`` computes them from the mask."""
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    # ---- training ---------------------------------------------------------------------------
    def training_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        """The model's inputs for a training batch: each row its prompt, then the chunk's text and the
        end token, left-padded; ``labels`` hold the chunk's tokens and ``IGNORE`` everywhere else."""
        chunks = self._actions_in(batch, batch[ACTION].float())
        prompts = self._prompts(batch)
        targets = [self.tokenizer(self.action_text.encode(chunk.cpu()), add_special_tokens=False)["input_ids"]
                   + [self.end_id] for chunk in chunks]
        rows = [ids[mask.bool()] for ids, mask in zip(prompts["input_ids"], prompts["attention_mask"])]
        length = max(len(r) + len(t) for r, t in zip(rows, targets))
        device = prompts["input_ids"].device
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long, device=device)
        labels = torch.full_like(input_ids, IGNORE)
        attention = torch.zeros_like(input_ids)
        for i, (prompt, target) in enumerate(zip(rows, targets)):
            target = torch.tensor(target, device=device)
            shown = target.clone()
            if self.training and self.config.vlm.mask_prob > 0:  # hide some action tokens, keep their targets
                hide = torch.rand(len(target), device=device) < self.config.vlm.mask_prob
                shown[hide] = self.pad_id
            start = length - len(prompt) - len(target)
            input_ids[i, start:] = torch.cat([prompt, shown])
            labels[i, length - len(target):] = target
            attention[i, start:] = 1
        extra = {k: v for k, v in prompts.items() if k not in ("input_ids", "attention_mask")}
        return {"input_ids": input_ids, "attention_mask": attention, "position_ids": self._positions(attention),
                "labels": labels, **extra}

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the action tokens (prompt tokens and padding are not scored)."""
        self._check_observation(batch)
        self._check_batch(batch)
        inputs = self.training_inputs(batch)
        labels = inputs.pop("labels")
        # The chunks end every row (left padding), so only the last `keep` positions predict a scored
        # token: the logits over the whole vocabulary are computed there alone, not at every prompt
        # and image position (at batch 16 the full logits are most of the step's activation memory).
        keep = int((labels != IGNORE).sum(1).max()) + 1
        logits = self.model(**inputs, logits_to_keep=keep).logits[:, :-1]
        labels = labels[:, labels.shape[1] - keep + 1:]
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        scored = labels != IGNORE
        accuracy = (logits.argmax(-1) == labels)[scored].float().mean()
        return loss, {"loss": float(loss.detach()), "token_accuracy": float(accuracy)}

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_action_chunk(self, obs: dict, generator: Generators = None, steps: int | None = None
                             ) -> torch.Tensor:
        """Greedy, grammar-constrained decoding (``generator`` is unused: decoding is deterministic).
        ``steps`` slices the decoded chunk; the text is still written whole."""
        from transformers import LogitsProcessorList

        self._check_observation(obs)
        prompts = self._prompts(obs)
        if self._grammar is None:
            self._grammar = ActionGrammar(self.tokenizer, self.action_text, 0, self.eos_ids)
        grammar = self._grammar.for_prompt(prompts["input_ids"].shape[1])
        out = self.model.generate(**prompts, logits_processor=LogitsProcessorList([grammar]), do_sample=False,
                                  max_new_tokens=self.max_new_tokens, eos_token_id=self.eos_ids,
                                  pad_token_id=self.pad_id)
        texts = self.tokenizer.batch_decode(out[:, prompts["input_ids"].shape[1]:], skip_special_tokens=True)
        chunks = torch.stack([self.action_text.decode(text) for text in texts]).to(obs[OBS_STATE].device)
        return self._actions_out(obs, chunks[:, :steps])

    def for_inference(self, precision: str = "fp32") -> "VLMPolicy":
        """LoRA adapters merged into the weights they adapt: the same outputs, one matrix per projection
        instead of three at every generated token (on an H200, 2.7 s per re-plan unmerged against 1.2 s
        for the plain model of the same size). Only fp32: bf16 inference is not built for this backbone."""
        if precision != "fp32":
            raise UserError(f"inference precision {precision} is for the modular backbone; "
                            "evaluate the VLM backbone in fp32 (the default)")
        if self.config.vlm.lora_rank > 0 and hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()
            # From here on this is a plain model: saved, it reloads as one (no adapters to re-apply).
            self.config = replace(self.config, vlm=replace(self.config.vlm, lora_rank=0))
        return self.eval()

    def parameter_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "frozen": sum(p.numel() for p in self.parameters()) - trainable}
