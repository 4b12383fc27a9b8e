"""The EasyVLA policy: encoders -> fusion -> action head, with normalization at the boundary.

Raw environment units in, raw units out. Heads see only normalized actions.

    images ──ResNet18──> vision tokens ─┐
    instruction ──frozen LM──> text token ┴─> scene self-attention ─┐
    state ──MLP──> state token ─────────────> cross-attention to scene ─> Context ─> head ─> chunk
"""

from collections import deque
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from action_head import build_head
from core.keys import ACTION, ACTION_IS_PAD, OBS_IMAGE, OBS_STATE, TASK
from core.rng import Generators
from encoders import StateEncoder, TextEncoder, VisionEncoder
from envs.features import Features
from fusion import Context, FusionTransformer
from policy.action_queue import ActionQueue, TemporalEnsembler
from policy.config import ModelConfig
from policy.normalizer import Normalizer


@dataclass
class _RowState:
    """What ``select_action`` remembers for one batch row (one env's episode)."""

    history: deque  # of one-step observations {TASK, OBS_STATE (S,), OBS_IMAGE (N, 3, H, W)}
    queue: ActionQueue
    ensembler: TemporalEnsembler | None
    pending: torch.Tensor | None = None  # this step's ensembled action


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
    def reset(self, rows: list[int] | None = None) -> None:
        """Forget observation history and queued actions: of every env (``rows=None``, at the start of a
        batch of episodes), or of the given batch rows only (envs that just started a new episode while
        the others go on)."""
        if rows is None:
            self._rows: list[_RowState] | None = None  # sized by the next select_action
            return
        if self._rows is None:
            return
        for i in rows:
            self._rows[i] = self._new_row()

    def _new_row(self) -> "_RowState":
        pc = self.config.policy
        ensembler = (TemporalEnsembler(pc.ensemble, pc.chunk_size, pc.ensemble_coeff, pc.ensemble_k)
                     if pc.ensemble != "none" else None)
        return _RowState(deque(maxlen=pc.n_obs_steps), ActionQueue(pc.n_action_steps), ensembler)

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
    def predict_action_chunk(self, obs: dict, generator: Generators = None) -> torch.Tensor:
        """Observation with a time axis -> (B, chunk_size, A) actions in raw env units.

        ``generator`` draws the sampling noise of stochastic heads (reproducible rollouts).
        """
        context = self.encode(obs)
        chunk = self.head.predict(context, generator)
        return self._actions_out(obs, chunk)

    def _stack_history(self, rows: list[int]) -> dict:
        """The observation histories of ``rows`` as a batch with a time axis."""
        histories = [self._rows[i].history for i in rows]
        stacked = {TASK: [h[-1][TASK] for h in histories],
                   OBS_STATE: torch.stack([torch.stack([o[OBS_STATE] for o in h]) for h in histories])}
        if self.features.has_images:
            stacked[OBS_IMAGE] = torch.stack([torch.stack([o[OBS_IMAGE] for o in h]) for h in histories])
        return stacked

    @torch.no_grad()
    def select_action(self, obs: dict, generator: Generators = None) -> torch.Tensor:
        """One control step. ``obs``: state (B, S), images (B, N_cam, 3, H, W), task list -> (B, A) raw.

        Each row keeps its own history and queue (``reset(rows)`` restarts some). Without ensembling a
        row is re-planned once every ``n_action_steps`` calls, with it every call; the rows due are
        planned together in one batch. ``generator``: one for all rows, or one per row.
        """
        if self.training:
            raise RuntimeError("select_action needs eval mode: call policy.eval() first")
        if obs[OBS_STATE].dim() != 2:
            raise ValueError(f"select_action takes one step, {OBS_STATE} (B, S); got {tuple(obs[OBS_STATE].shape)}")
        batch = obs[OBS_STATE].shape[0]
        if self._rows is None:
            self._rows = [self._new_row() for _ in range(batch)]
        if len(self._rows) != batch:
            raise ValueError(f"select_action got {batch} rows after {len(self._rows)}; call reset() for a new batch")
        for i, row in enumerate(self._rows):
            step = {TASK: obs[TASK][i], OBS_STATE: obs[OBS_STATE][i]}
            if self.features.has_images:
                step[OBS_IMAGE] = obs[OBS_IMAGE][i]
            row.history.extend([step] * (row.history.maxlen if not row.history else 1))  # a new episode: repeat
        due = [i for i, row in enumerate(self._rows) if row.ensembler is not None or row.queue.empty()]
        if due:
            if generator is not None and not isinstance(generator, torch.Generator):
                generator = [generator[i] for i in due]
            chunks = self.predict_action_chunk(self._stack_history(due), generator)
            for i, chunk in zip(due, chunks):
                row = self._rows[i]
                if row.ensembler is not None:
                    row.pending = row.ensembler.update(chunk[None])[0]
                else:
                    row.queue.push(chunk[None])
        return torch.stack([row.pending if row.ensembler is not None else row.queue.pop()[0] for row in self._rows])

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameters (the frozen language model, kept on CPU, included)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad) + self.text.frozen_parameter_count
        return {"trainable": trainable, "frozen": frozen}
