"""The interface every policy backbone implements, and what they share: normalization at the boundary,
per-env observation history, action queues and ensembling (``select_action``), the registry.

Two backbones, chosen by ``backbone.type``: ``modular`` (``policy.vla_policy.VLAPolicy``: encoders ->
fusion -> action head) and ``vlm`` (``policy.vlm_policy.VLMPolicy``: a pretrained vision-language
model that writes the chunk as text). From the outside they are the same: raw environment units in,
raw units out, the same training loss signature, the same checkpoints.
"""

import contextlib
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import UserError
from core.keys import (ACTION, ACTION_IS_PAD, OBS_FIRST_IMAGE, OBS_FIRST_TOKENS, OBS_IMAGE, OBS_PRIVILEGED, OBS_STATE,
                       TASK)
from core.registry import Registry
from core.rng import Generators
from envs.features import Features
from policy.action_queue import ActionQueue, TemporalEnsembler
from policy.config import ModelConfig
from policy.normalizer import Normalizer


INFERENCE_PRECISIONS = ("fp32", "bf16")


@dataclass
class _RowState:
    """What ``select_action`` remembers for one batch row (one env's episode)."""

    history: deque  # of one-step observations {TASK, OBS_STATE (S,), OBS_IMAGE (N, 3, H, W)}
    queue: ActionQueue
    ensembler: TemporalEnsembler | None
    pending: torch.Tensor | None = None  # this step's ensembled action
    first_image: torch.Tensor | None = None  # the episode's first images (N, 3, H, W), for policy.first_frame
    first_tokens: torch.Tensor | None = None  # the same, encoded once (``Policy.encode_first_frame``)


class Policy(nn.Module, ABC):
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
        if pc.first_frame and not features.has_images:
            raise ValueError("policy.first_frame needs cameras: the first frame is the episode's first images")
        if pc.relative_actions and features.action_dim > features.state_dim:
            raise ValueError(f"policy.relative_actions needs action_dim ({features.action_dim}) <= state_dim "
                             f"({features.state_dim}): actions are taken relative to the first state entries")
        dims = {OBS_STATE: features.state_dim, ACTION: features.action_dim}
        if pc.aux_state_weight > 0:
            if features.privileged_dim == 0:
                raise ValueError("policy.aux_state_weight > 0 needs features.privileged_dim > 0: a dataset that "
                                 "recorded the simulator's state")
            dims[OBS_PRIVILEGED] = features.privileged_dim
        self.normalizer = Normalizer(dims, {key: pc.normalization for key in dims})
        self.inference_precision = "fp32"  # set by for_inference
        self.reset()

    @abstractmethod
    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch (see core.keys for shapes) -> (loss, metrics)."""

    @abstractmethod
    def predict_action_chunk(self, obs: dict, generator: Generators = None, steps: int | None = None
                             ) -> torch.Tensor:
        """Observation with a time axis -> (B, chunk_size, A) actions in raw env units.

        ``generator`` draws the sampling noise of stochastic policies (reproducible rollouts).
        ``steps``: only the chunk's first ``steps`` actions, exactly those of the whole chunk (what
        ``select_action`` executes; a head that writes the chunk step by step then stops early).
        """

    def cache_instructions(self, instructions: list[str]) -> None:
        """Compute what a policy keeps per instruction outside the training step (none by default), so
        that benchmarks time steady-state steps."""

    @abstractmethod
    def parameter_counts(self) -> dict[str, int]:
        """{"trainable": n, "frozen": n}, frozen models kept outside the module included."""

    def for_inference(self, precision: str = "fp32") -> "Policy":
        """This policy in its fastest form for evaluation, once it will not train again (itself by
        default; the VLM folds LoRA adapters into its weights). The result is not for training or saving.

        ``precision``: "fp32", or "bf16" to encode the observation under bf16 autocast. Whether that is
        faster depends on the hardware (``benchmarks.latency --precision``), and chunks differ
        from fp32 by bf16 rounding, so check success too.
        """
        if precision not in INFERENCE_PRECISIONS:
            raise UserError(f"inference precision '{precision}' is not one of {', '.join(INFERENCE_PRECISIONS)}")
        self.inference_precision = precision
        return self.eval()

    def compile_for_inference(self) -> "Policy":
        """Compile a re-plan's networks for inference (after ``for_inference`` and after loading weights:
        compiled weights are frozen; the same chunks up to float rounding). A backbone with nothing to
        compile is a UserError."""
        raise UserError(f"compiling for inference is built for the modular backbone, not for "
                        f"{self.config.model_summary()}; run without --compile")

    def inference_autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context ``for_inference(precision)`` asked for (none for fp32)."""
        if self.inference_precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_first_frame(self, images: torch.Tensor) -> torch.Tensor | None:
        """An episode's first images (B, N_cam, 3, H, W) as ``select_action`` keeps them for
        ``policy.first_frame``: encoded once per episode and passed back as ``OBS_FIRST_TOKENS``, where
        ``encode`` would otherwise re-encode them at every re-plan. None (the default): keep only the images."""
        return None

    def offloaded_bytes(self) -> int:
        """Bytes of frozen weights the policy keeps on the CPU, outside the training step (none by default)."""
        return 0

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
                     if self.replan_steps is None else None)
        return _RowState(deque(maxlen=pc.n_obs_steps), ActionQueue(pc.n_action_steps), ensembler)

    # ---- model ----------------------------------------------------------------------------
    def _check_observation(self, obs: dict) -> None:
        f, t = self.features, self.config.policy.n_obs_steps
        keys = (OBS_STATE, TASK) + ((OBS_IMAGE,) if f.has_images else ())
        for key in keys + ((OBS_FIRST_IMAGE,) if self.config.policy.first_frame else ()):
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
            if self.config.policy.first_frame and tuple(obs[OBS_FIRST_IMAGE].shape[1:]) != expected[1:]:
                raise ValueError(f"{OBS_FIRST_IMAGE} must be (B, {', '.join(map(str, expected[1:]))}); "
                                 f"got {tuple(obs[OBS_FIRST_IMAGE].shape)}")
        if len(obs[TASK]) != state.shape[0]:
            raise ValueError(f"{TASK} has {len(obs[TASK])} instructions for a batch of {state.shape[0]}")

    def _check_batch(self, batch: dict) -> None:
        """A training batch has the action chunk and its padding mask, of the configured shape."""
        for key in (ACTION, ACTION_IS_PAD) + ((OBS_PRIVILEGED,) if self.config.policy.aux_state_weight > 0 else ()):
            if key not in batch:
                raise KeyError(f"training batch is missing '{key}'")
        expected = (self.config.policy.chunk_size, self.features.action_dim)
        if tuple(batch[ACTION].shape[1:]) != expected:
            raise ValueError(f"{ACTION} must be (B, {expected[0]}, {expected[1]}); got {tuple(batch[ACTION].shape)}")

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

    def _stack_history(self, rows: list[int]) -> dict:
        """The observation histories of ``rows`` as a batch with a time axis."""
        histories = [self._rows[i].history for i in rows]
        stacked = {TASK: [h[-1][TASK] for h in histories],
                   OBS_STATE: torch.stack([torch.stack([o[OBS_STATE] for o in h]) for h in histories])}
        if self.features.has_images:
            stacked[OBS_IMAGE] = torch.stack([torch.stack([o[OBS_IMAGE] for o in h]) for h in histories])
        if self.config.policy.first_frame:
            stacked[OBS_FIRST_IMAGE] = torch.stack([self._rows[i].first_image for i in rows])
            tokens = [self._rows[i].first_tokens for i in rows]
            if all(t is not None for t in tokens):
                stacked[OBS_FIRST_TOKENS] = torch.stack(tokens)
        return stacked

    @property
    def replan_steps(self) -> int | None:
        """The steps ``select_action`` asks of a re-plan: the ``n_action_steps`` its queue executes, or
        None (the whole chunk) when an ensembler blends chunks."""
        return None if self.config.policy.ensemble != "none" else self.config.policy.n_action_steps

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
        started = [i for i, row in enumerate(self._rows) if not row.history]
        for i, row in enumerate(self._rows):
            step = {TASK: obs[TASK][i], OBS_STATE: obs[OBS_STATE][i]}
            if self.features.has_images:
                step[OBS_IMAGE] = obs[OBS_IMAGE][i]
            if not row.history:  # a new episode: its first images are kept, its first step repeated
                row.first_image = step.get(OBS_IMAGE)
            row.history.extend([step] * (row.history.maxlen if not row.history else 1))
        if started and self.config.policy.first_frame:  # the new episodes' first images, encoded together
            tokens = self.encode_first_frame(torch.stack([self._rows[i].first_image for i in started]))
            for n, i in enumerate(started):
                self._rows[i].first_tokens = None if tokens is None else tokens[n]
        due = [i for i, row in enumerate(self._rows) if row.ensembler is not None or row.queue.empty()]
        if due:
            if generator is not None and not isinstance(generator, torch.Generator):
                generator = [generator[i] for i in due]
            chunks = self.predict_action_chunk(self._stack_history(due), generator, self.replan_steps)
            for i, chunk in zip(due, chunks):
                row = self._rows[i]
                if row.ensembler is not None:
                    row.pending = row.ensembler.update(chunk[None])[0]
                else:
                    row.queue.push(chunk[None])
        return torch.stack([row.pending if row.ensembler is not None else row.queue.pop()[0] for row in self._rows])


POLICIES: Registry[Policy] = Registry("backbone", Policy)


def build_policy(config: ModelConfig, features: Features) -> Policy:
    """The policy of ``config.backbone.type`` (importing ``policy.backbones`` registers them all)."""
    return POLICIES.get(config.backbone.type)(config, features)
