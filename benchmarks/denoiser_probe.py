"""How well each denoiser fits a trained policy's task, in minutes instead of a training run each.

    python -m benchmarks.denoiser_probe --checkpoint RUN_DIR [--denoisers unet mlp resmlp] [--steps 1500]

Encodes the checkpoint's training data once with its own encoders and fusion (frozen, eval mode), then
trains a fresh head of the checkpoint's type (diffusion or flow) per denoiser on those fixed contexts,
with the run's optimizer settings. Per denoiser: parameters, the eager batch-1 denoising step (what a
re-plan pays ``num_inference_steps`` times), the held-out loss, and the mean squared error of sampled
chunks against the demonstrated ones on held-out samples (the last tenth of the samples: the last
episodes), over the whole chunk and over the ``n_action_steps`` a re-plan executes (normalized units).

The contexts come from encoders trained together with the checkpoint's own denoiser, which favours it:
read the table as a ranking of what each network can fit, not as closed-loop success.
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from action_head import build_head
from action_head.denoisers import DENOISER_KINDS, DenoiserHeadConfig
from benchmarks.latency import interleaved_replans, percentiles_ms
from core.errors import ArgumentParser, UserError, positive_int, run_main
from core.keys import ACTION, ACTION_IS_PAD
from experiment.config import Config
from experiment.optim import make_optimizer, make_scheduler
from fusion.context import Context

HELD_OUT = 0.1  # the last tenth of the samples


@dataclasses.dataclass
class Encoded:
    """A dataset seen through a policy's frozen encoders: contexts and normalized target chunks."""

    query: torch.Tensor  # (N, Q, d)
    scene: torch.Tensor  # (N, K, d)
    scene_pad: torch.Tensor  # (N, K) bool
    targets: torch.Tensor  # (N, H, A), the head's units
    action_is_pad: torch.Tensor  # (N, H) bool

    def __len__(self) -> int:
        return len(self.targets)

    def context(self, rows: torch.Tensor) -> Context:
        return Context(self.query[rows], self.scene[rows], self.scene_pad[rows])


def encode_dataset(policy, dataset, batch_size: int = 128) -> Encoded:
    """Every sample of ``dataset`` through ``policy.encode`` (no gradients, eval mode)."""
    parts: dict[str, list[torch.Tensor]] = {field.name: [] for field in dataclasses.fields(Encoded)}
    policy.eval()
    with torch.no_grad():
        for batch in tqdm(DataLoader(dataset, batch_size=batch_size), desc="encoding the data"):
            context = policy.encode(batch)
            for name, value in (("query", context.query), ("scene", context.scene),
                                ("scene_pad", context.scene_pad_mask),
                                ("targets", policy._actions_in(batch, batch[ACTION].float())),
                                ("action_is_pad", batch[ACTION_IS_PAD])):
                parts[name].append(value.float() if value.is_floating_point() else value)
    return Encoded(**{name: torch.cat(values) for name, values in parts.items()})


def step_ms(head, d_model: int, calls: int = 100) -> float:
    """Median eager milliseconds of one denoising step at batch 1 (the condition's share computed once)."""
    denoise = head.denoiser.conditioned(torch.randn(1, head.n_queries * d_model))
    x, t = torch.randn(1, head.chunk_size, head.action_dim), torch.full((1,), 50.0)
    with torch.no_grad():
        times = interleaved_replans({"step": lambda: denoise(x, t)}, calls, rounds=1)["step"]
    return percentiles_ms(times)[0]


def probe(encoded: Encoded, head_config: DenoiserHeadConfig, config: Config, steps: int, d_model: int,
          n_queries: int, executed: int, seed: int = 0) -> dict[str, float]:
    """Train a fresh head on ``encoded``'s first nine tenths for ``steps`` steps; measure it on the rest."""
    torch.manual_seed(seed)
    n, (chunk_size, action_dim) = len(encoded), encoded.targets.shape[1:]
    split = int(n * (1 - HELD_OUT))
    head = build_head(head_config, d_model, n_queries, chunk_size, action_dim)
    train = dataclasses.replace(config.train, steps=max(1, steps))
    optimizer = make_optimizer(list(head.parameters()), train)
    scheduler = make_scheduler(optimizer, train)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(steps):
        rows = torch.randint(0, split, (config.train.batch_size,), generator=generator)
        loss, _ = head.loss(encoded.context(rows), encoded.targets[rows], encoded.action_is_pad[rows])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), config.train.grad_clip)
        optimizer.step()
        scheduler.step()
    held = torch.arange(split, n)
    context, targets, pad = encoded.context(held), encoded.targets[held], encoded.action_is_pad[held]
    with torch.no_grad():
        torch.manual_seed(seed + 1)  # the loss draws its noise and times from the global generator
        held_loss = float(np.mean([head.loss(context, targets, pad)[0].item() for _ in range(5)]))
        head.eval()
        sampled = head.predict(context, torch.Generator().manual_seed(seed + 2))
    error = ((sampled - targets) ** 2).mean(-1)  # (N, H)
    valid = ~pad
    return {"params": sum(p.numel() for p in head.parameters()), "step_ms": step_ms(head, d_model),
            "held_out_loss": held_loss, "sample_mse": error[valid].mean().item(),
            "executed_mse": error[:, :executed][valid[:, :executed]].mean().item()}


def probe_table(encoded: Encoded, config: Config, denoisers: list[str], steps: int) -> str:
    """Markdown: one row per denoiser, each trained alike on the same contexts."""
    lines = [("| denoiser | parameters | step at batch 1, eager (ms) | held-out loss | sampled chunk MSE | "
              f"first {config.policy.n_action_steps} actions MSE |"), "|---|---|---|---|---|---|"]
    for kind in denoisers:
        head_config = dataclasses.replace(config.action_head, denoiser=kind)
        row = probe(encoded, head_config, config, steps, config.policy.d_model, config.fusion.n_queries,
                    config.policy.n_action_steps)
        lines.append(f"| {kind} | {row['params'] / 1e6:.2f}M | {row['step_ms']:.2f} | {row['held_out_loss']:.4f} | "
                     f"{row['sample_mse']:.4f} | {row['executed_mse']:.4f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint folder")
    parser.add_argument("--denoisers", nargs="+", choices=DENOISER_KINDS, default=list(DENOISER_KINDS))
    parser.add_argument("--steps", type=positive_int, default=1500, help="training steps per denoiser")
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from data.dataset import ChunkDataset
    from data.provision import ensure_dataset
    from experiment.config import checkpoint_config
    from policy.checkpoint import load_policy

    best = Path(args.checkpoint) / "checkpoints" / "best"  # a run directory, or a checkpoint folder itself
    folder = best if best.is_dir() else Path(args.checkpoint)
    config = checkpoint_config(folder)
    if not isinstance(config.action_head, DenoiserHeadConfig):
        raise UserError(f"{args.checkpoint} has a {config.action_head.type} head; the probe compares the "
                        "denoisers of a diffusion or flow checkpoint")
    policy = load_policy(folder)
    store, episodes = ensure_dataset(config.env, config.data)
    dataset = ChunkDataset(store, config.policy.n_obs_steps, config.policy.chunk_size, episodes)
    print(f"{folder}: {config.action_head.type} head, {len(dataset)} samples, {args.steps} steps per denoiser, "
          f"{args.threads} threads")
    print(probe_table(encode_dataset(policy, dataset), config, args.denoisers, args.steps))


if __name__ == "__main__":
    run_main(main)
