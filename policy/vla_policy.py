"""The EasyVLA policy: encoders -> fusion -> action head, with normalization at the boundary.

Raw environment units in, raw units out. Heads see only normalized actions.

    images ──ResNet18──> vision tokens ─┐
    instruction ──frozen LM──> text token ┴─> scene self-attention ─┐
    state ──MLP──> state token ─────────────> cross-attention to scene ─> Context ─> head ─> chunk

With ``policy.first_frame`` the episode's first images join the scene too (the same ResNet, their own
embedding): the layout as it was before the arm moved.
"""

import torch
from einops import rearrange
from torch import nn

from action_head import build_head
from core.device import check_compile_supported, compile_frozen
from core.keys import (ACTION, ACTION_IS_PAD, OBS_FIRST_IMAGE, OBS_FIRST_TOKENS, OBS_IMAGE, OBS_PRIVILEGED, OBS_STATE,
                       TASK)
from core.rng import Generators
from encoders import StateEncoder, TextEncoder, VisionEncoder
from envs.features import Features
from fusion import Context, FusionTransformer
from policy.base import POLICIES, Policy
from policy.config import ModelConfig


@POLICIES.register("modular")
class VLAPolicy(Policy):
    """The modular backbone (``backbone.type: modular``), built from scratch but for the frozen text model.

    Args:
        config: the model's sections of the experiment config (``Config.model``).
        features: observation and action shapes, from the env or dataset.
    """

    def __init__(self, config: ModelConfig, features: Features):
        super().__init__(config, features)
        pc = config.policy
        d = pc.d_model
        self.vision = (VisionEncoder(config.vision, d, features.image_size, len(features.cameras))
                       if features.has_images else None)
        self.obs_time_embed = nn.Parameter(torch.zeros(pc.n_obs_steps, 1, d)) if features.has_images else None
        self.first_frame_embed = nn.Parameter(torch.zeros(1, 1, d)) if pc.first_frame else None
        self.text = TextEncoder(config.text, d)
        self.state_encoder = StateEncoder(config.state, features.state_dim, pc.n_obs_steps, d)
        self.hidden_state_token = nn.Parameter(torch.zeros(d)) if pc.state_dropout > 0 else None
        self.fusion = FusionTransformer(config.fusion, d)
        self.head = build_head(config.action_head, d, config.fusion.n_queries, pc.chunk_size, features.action_dim)
        # Training only: predicts the simulator's state from what the head reads (policy.aux_state_weight).
        self.aux_state = (nn.Sequential(nn.Linear(config.fusion.n_queries * d, d), nn.GELU(),
                                        nn.Linear(d, features.privileged_dim))
                          if pc.aux_state_weight > 0 else None)
        self._compiled = False  # compile_for_inference ran

    def encode(self, obs: dict) -> Context:
        """Observation with a time axis (see core.keys) -> fused Context."""
        self._check_observation(obs)
        state = self.normalizer.normalize(OBS_STATE, obs[OBS_STATE].float())
        scene = [self.text(list(obs[TASK]))]
        if self.vision is not None:
            images = obs[OBS_IMAGE]
            if self.first_frame_embed is not None:  # the layout as the episode began, before the arm moved
                # Without gradients: the ResNet learns from the current frames and the first frame reuses
                # it, so it costs one forward pass, not a forward and a backward (2.3x a step with both).
                # At inference select_action passes them encoded, once per episode (encode_first_frame).
                first = obs.get(OBS_FIRST_TOKENS)
                if first is None:
                    with torch.no_grad():
                        first = self.vision(obs[OBS_FIRST_IMAGE])
                scene.insert(0, first + self.first_frame_embed)
            tokens = self.vision(rearrange(images, "b t n c h w -> (b t) n c h w"))
            tokens = rearrange(tokens, "(b t) k d -> b t k d", b=images.shape[0]) + self.obs_time_embed[None]
            scene.insert(0, rearrange(tokens, "b t k d -> b (t k) d"))
        scene = torch.cat(scene, dim=1)
        pad = torch.zeros(scene.shape[:2], dtype=torch.bool, device=scene.device)
        state_token = self.state_encoder(state)
        if self.training and self.hidden_state_token is not None:
            # Behaviour cloning's shortcut: the hand position along the demonstrated path already
            # tells where the path goes. Hiding it at random makes vision carry the task.
            hide = torch.rand(state_token.shape[0], 1, device=state_token.device) < self.config.policy.state_dropout
            state_token = torch.where(hide, self.hidden_state_token.to(state_token.dtype), state_token)
        return self.fusion(scene, pad, state_token)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch (see core.keys for shapes) -> (loss, metrics)."""
        self._check_batch(batch)
        context = self.encode(batch)
        targets = self._actions_in(batch, batch[ACTION].float())
        loss, metrics = self.head.loss(context, targets, batch[ACTION_IS_PAD])
        if self.aux_state is not None:
            # Privileged supervision: the context must say where the goal (or the block) is, a dense
            # signal the action loss gives only through the noise it denoises.
            predicted = self.aux_state(context.global_vector()).float()
            target = self.normalizer.normalize(OBS_PRIVILEGED, batch[OBS_PRIVILEGED].float())
            aux = nn.functional.mse_loss(predicted, target)
            loss = loss + self.config.policy.aux_state_weight * aux
            metrics = {**metrics, "aux_state_loss": aux.item()}
        return loss, metrics

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict, generator: Generators = None, steps: int | None = None
                             ) -> torch.Tensor:
        with self.inference_autocast(obs[OBS_STATE].device):
            context = self.encode(obs)
        # The head runs in fp32 at every precision: its batch-1 matmuls are small and weight-bound, and
        # autocast would re-cast each weight at each of its denoising or decoding calls.
        context = context.float()
        chunk = (self.head.predict(context, generator) if steps is None
                 else self.head.predict_prefix(context, steps, generator))
        return self._actions_out(obs, chunk)

    def for_inference(self, precision: str = "fp32") -> "VLAPolicy":
        """See ``Policy.for_inference``. "bf16" runs the encoders and the fusion under bf16 autocast, with
        the ResNet in channels-last (oneDNN's bf16 convolutions and the stem's max-pool are fast in that
        layout; NCHW max-pool: 20x slower at batch 1); the action head stays fp32."""
        super().for_inference(precision)
        if precision == "bf16" and self.vision is not None:
            self.vision.to(memory_format=torch.channels_last)
        return self

    def compile_for_inference(self) -> "VLAPolicy":
        """See ``Policy.compile_for_inference``. The ResNet, the state encoder and the fusion run through
        ``torch.compile`` with frozen weights (``core.device.compile_frozen``: oneDNN's convolutions get
        their weights pre-packed once, not at every call), and the head compiles what it runs many times
        per re-plan (a denoiser's or the decoder's step). The frozen text model stays eager: it runs once per
        instruction."""
        check_compile_supported(next(self.parameters()).device)
        if not self._compiled:
            for module in (self.vision, self.state_encoder, self.fusion):
                if module is not None:
                    module.forward = compile_frozen(module.forward)
            self.head.compile_for_inference()
            self._compiled = True
        return self

    @torch.no_grad()
    def encode_first_frame(self, images: torch.Tensor) -> torch.Tensor | None:
        """See ``Policy.encode_first_frame``: the vision tokens (B, K, d), at the inference precision."""
        if self.first_frame_embed is None:
            return None
        with self.inference_autocast(images.device):
            return self.vision(images)

    def cache_instructions(self, instructions: list[str]) -> None:
        self.text.embed(instructions)  # the frozen LM runs once per instruction string

    def offloaded_bytes(self) -> int:
        """The frozen language model's weights (on the CPU; only its cached embeddings enter the step)."""
        return sum(p.numel() * p.element_size() for p in self.text.language_model.parameters())

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameters (the frozen language model, kept on CPU, included)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad) + self.text.frozen_parameter_count
        return {"trainable": trainable, "frozen": frozen}
