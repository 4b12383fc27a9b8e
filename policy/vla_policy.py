"""The EasyVLA policy: encoders -> fusion -> action head, with normalization at the boundary.

Raw environment units in, raw units out. Heads see only normalized actions.

    images ──ResNet18──> vision tokens ─┐
    instruction ──frozen LM──> text token ┴─> scene self-attention ─┐
    state ──MLP──> state token ─────────────> cross-attention to scene ─> Context ─> head ─> chunk
"""

from collections import deque

import torch
from einops import rearrange
from torch import nn

from action_head import build_head
from core.keys import ACTION, ACTION_IS_PAD, OBS_IMAGE, OBS_STATE, TASK
from encoders import StateEncoder, TextEncoder, VisionEncoder
from envs.features import Features
from fusion import Context, FusionTransformer
from policy.action_queue import ActionQueue, TemporalEnsembler
from policy.config import ModelConfig
from policy.normalizer import Normalizer


class VLAPolicy(nn.Module):
    """
    Args:
        config: the model's sections of the experiment config (``Config.model``).
        features: observation and action shapes, from the env or dataset.
    """

    def __init__(self, config: ModelConfig, features: Features):
        super().__init__()
        self.config = config
        self.features = features
        pc = config.policy
        if pc.relative_actions and features.action_dim > features.state_dim:
            raise ValueError(f"policy.relative_actions needs action_dim ({features.action_dim}) <= state_dim "
                             f"({features.state_dim}): actions are taken relative to the first state entries")
        d = pc.d_model
        self.vision = (VisionEncoder(config.vision, d, features.image_size, len(features.cameras))
                       if features.has_images else None)
        self.obs_time_embed = nn.Parameter(torch.zeros(pc.n_obs_steps, 1, d)) if features.has_images else None
        self.text = TextEncoder(config.text, d)
        self.state_encoder = StateEncoder(config.state, features.state_dim, pc.n_obs_steps, d)
        self.hidden_state_token = nn.Parameter(torch.zeros(d)) if pc.state_dropout > 0 else None
        self.fusion = FusionTransformer(config.fusion, d)
        self.head = build_head(config.action_head, d, config.fusion.n_queries, pc.chunk_size, features.action_dim)
        self.normalizer = Normalizer({OBS_STATE: features.state_dim, ACTION: features.action_dim},
                                     {OBS_STATE: pc.normalization, ACTION: pc.normalization})
        self.reset()

    # ---- inference-time state -------------------------------------------------------------
    def reset(self) -> None:
        """Forget the observation history and any queued actions (call at each episode start)."""
        pc = self.config.policy
        self._history: deque[dict] = deque(maxlen=pc.n_obs_steps)
        self._queue = ActionQueue(pc.n_action_steps)
        self._ensembler = (TemporalEnsembler(pc.ensemble, pc.chunk_size, pc.ensemble_coeff, pc.ensemble_k)
                           if pc.ensemble != "none" else None)

    # ---- model ----------------------------------------------------------------------------
    def _check_observation(self, obs: dict) -> None:
        f, t = self.features, self.config.policy.n_obs_steps
        for key in (OBS_STATE, TASK) + ((OBS_IMAGE,) if f.has_images else ()):
            if key not in obs:
                raise KeyError(f"observation is missing '{key}'; it has {sorted(obs)}")
        state = obs[OBS_STATE]
        if state.dim() != 3 or state.shape[1:] != (t, f.state_dim):
            raise ValueError(f"{OBS_STATE} must be (B, {t}, {f.state_dim}); got {tuple(state.shape)}")
        if f.has_images:
            expected = (t, len(f.cameras), 3, *f.image_size)
            if obs[OBS_IMAGE].dim() != 6 or tuple(obs[OBS_IMAGE].shape[1:]) != expected:
                raise ValueError(f"{OBS_IMAGE} must be (B, {', '.join(map(str, expected))}); "
                                 f"got {tuple(obs[OBS_IMAGE].shape)}")
        if len(obs[TASK]) != state.shape[0]:
            raise ValueError(f"{TASK} has {len(obs[TASK])} instructions for a batch of {state.shape[0]}")

    def encode(self, obs: dict) -> Context:
        """Observation with a time axis (see core.keys) -> fused Context."""
        self._check_observation(obs)
        state = self.normalizer.normalize(OBS_STATE, obs[OBS_STATE].float())
        scene = [self.text(list(obs[TASK]))]
        if self.vision is not None:
            images = obs[OBS_IMAGE]
            batch, steps = images.shape[:2]
            tokens = self.vision(rearrange(images, "b t n c h w -> (b t) n c h w"))
            tokens = rearrange(tokens, "(b t) k d -> b t k d", b=batch) + self.obs_time_embed[None]
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

    def _actions_in(self, obs: dict, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions (B, H, A) -> normalized head targets (relative to the state if configured)."""
        if self.config.policy.relative_actions:
            actions = actions - obs[OBS_STATE][:, -1:, : self.features.action_dim]
        return self.normalizer.normalize(ACTION, actions)

    def _actions_out(self, obs: dict, actions: torch.Tensor) -> torch.Tensor:
        actions = self.normalizer.unnormalize(ACTION, actions.float())
        if self.config.policy.relative_actions:
            actions = actions + obs[OBS_STATE][:, -1:, : self.features.action_dim]
        return actions

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch (see core.keys for shapes) -> (loss, metrics)."""
        for key in (ACTION, ACTION_IS_PAD):
            if key not in batch:
                raise KeyError(f"training batch is missing '{key}'")
        expected = (self.config.policy.chunk_size, self.features.action_dim)
        if tuple(batch[ACTION].shape[1:]) != expected:
            raise ValueError(f"{ACTION} must be (B, {expected[0]}, {expected[1]}); got {tuple(batch[ACTION].shape)}")
        context = self.encode(batch)
        targets = self._actions_in(batch, batch[ACTION].float())
        return self.head.loss(context, targets, batch[ACTION_IS_PAD])

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Observation with a time axis -> (B, chunk_size, A) actions in raw env units.

        ``generator`` draws the sampling noise of stochastic heads (reproducible rollouts).
        """
        context = self.encode(obs)
        chunk = self.head.predict(context, generator)
        return self._actions_out(obs, chunk)

    def _stack_history(self, obs: dict) -> dict:
        """Append a single-step observation to the history; repeat the first one until it is full."""
        if not self._history:
            self._history.extend([obs] * self._history.maxlen)
        else:
            self._history.append(obs)
        stacked = {TASK: list(obs[TASK]), OBS_STATE: torch.stack([o[OBS_STATE] for o in self._history], dim=1)}
        if self.features.has_images:
            stacked[OBS_IMAGE] = torch.stack([o[OBS_IMAGE] for o in self._history], dim=1)
        return stacked

    @torch.no_grad()
    def select_action(self, obs: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """One control step. ``obs``: state (B, S), images (B, N_cam, 3, H, W), task list -> (B, A) raw.

        Without ensembling the model runs once every ``n_action_steps`` calls; with it, every call.
        """
        if self.training:
            raise RuntimeError("select_action needs eval mode: call policy.eval() first")
        if obs[OBS_STATE].dim() != 2:
            raise ValueError(f"select_action takes one step, {OBS_STATE} (B, S); got {tuple(obs[OBS_STATE].shape)}")
        stacked = self._stack_history(obs)
        if self._ensembler is not None:
            return self._ensembler.update(self.predict_action_chunk(stacked, generator))
        if self._queue.empty():
            self._queue.push(self.predict_action_chunk(stacked, generator))
        return self._queue.pop()

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameters (the frozen language model, kept on CPU, included)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad) + self.text.frozen_parameter_count
        return {"trainable": trainable, "frozen": frozen}
