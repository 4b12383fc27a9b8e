"""Train an EasyVLA policy by imitation, evaluating it in closed loop as it goes.

    python train.py --config configs/metaworld_reach.yaml [--set action_head.type=flow train.steps=5000]
    python train.py --resume runs/metaworld_reach_20261122-101500      # continue a killed run exactly
    torchrun --nproc_per_node=2 train.py --config configs/pusht_state.yaml   # DistributedDataParallel

Under torchrun, train.batch_size is per process: the effective batch is batch_size x processes
(printed at start, and recorded with the results); the learning rate is not rescaled. Rank 0 logs,
checkpoints and evaluates.

A run directory holds: config.yaml (resolved), tb/ (TensorBoard), checkpoints/latest and
checkpoints/best (by the benchmark's headline metric on validation: Meta-World success, the
PushT score; ties go to the later checkpoint; never chosen on evaluation seeds), videos/ and
eval_results.json (the held-out evaluation of the best checkpoint, at the end).
"""

import argparse
import contextlib
import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from core.allocator import keep_freed_memory
from core.configuration import ConfigError, apply_overrides, describe, from_dict, to_dict
from core.device import autocast_for, device_name, precision_note, resolve_device, resolve_precision
from core.distributed import DistInfo, barrier, broadcast_object, init_distributed, replica_max_difference, shutdown
from core.errors import ArgumentParser, DamagedFileError, MissingResourceError, UserError, run_main
from core.lock import DirectoryLock
from data.dataset import ChunkDataset, compute_stats
from data.provision import ensure_dataset
from envs import Features, benchmark
from evaluation.run import evaluate_policy, format_table
from experiment.config import Config, checkpoint_config, load_config
from experiment.optim import accumulate_gradients, make_optimizer, make_scheduler
from policy.checkpoint import load_policy, load_weights, remove_stale_temporaries, save_policy
from policy.ema import EMA
from policy.backbones import Policy, build_policy

TRAINING_STATE = "training_state.pt"
# What --resume RUN --set may change: the budget and bookkeeping, not the model, data or optimizer.
RESUMABLE_OVERRIDES = ("device", "train.steps", "train.log_every", "train.save_every", "train.save_minutes",
                       "train.num_workers", "train.micro_batches", "eval.")


class TrainingDiverged(UserError):
    """The loss or the gradient norm became NaN or inf; nothing non-finite was saved."""


# TensorBoard's add_video imports moviepy, which imports pygame: keep it from probing sound cards.
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def parse_args() -> argparse.Namespace:
    keys = "\n".join(f"  {line}" for line in describe(Config))
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=f"config keys (YAML sections, or --set section.key=value):\n{keys}")
    parser.add_config_arguments(required=False, set_help="dotted overrides, e.g. train.lr=3e-4 (may be repeated; "
                                "with --resume only train.steps, train.log_every/save_every/save_minutes/num_workers, "
                                "eval.* and device)")
    parser.add_argument("--resume", type=Path, help="run directory to continue from its latest checkpoint")
    parser.add_argument("--run-dir", type=Path, help="where to write the run (default: runs/<config>_<time>)")
    parser.add_argument("--stop-after", type=int, help="exit after this many steps, as a crash would (tests)")
    parser.add_argument("--no-final-eval", action="store_true", help="skip the held-out evaluation at the end")
    args = parser.parse_args()
    if (args.config is None) == (args.resume is None):
        parser.error("give exactly one of --config or --resume")
    if args.stop_after is not None and args.stop_after < 1:
        parser.error(f"--stop-after must be at least 1, got {args.stop_after}")
    return args


def resumed_config(run_dir: Path, overrides: list[str]) -> Config:
    """The config of ``run_dir``'s latest checkpoint, with the overrides a resume may apply."""
    if not run_dir.is_dir():
        raise MissingResourceError(f"--resume {run_dir}: no such run directory")
    latest = run_dir / "checkpoints" / "latest"
    if not latest.parent.is_dir():  # (a crash between a save's renames leaves no 'latest': read_meta recovers it)
        raise MissingResourceError(f"--resume {run_dir}: no checkpoints folder in it; pass the run folder train.py "
                                   "wrote (runs/NAME), or start a new run with --config")
    config = checkpoint_config(latest)
    if not overrides:
        return config
    for text in overrides:
        key = text.split("=", 1)[0]
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_OVERRIDES):
            raise ConfigError(f"--resume cannot change '{key}' (the model, data and optimizer stay as trained); "
                              f"resumable: {', '.join(RESUMABLE_OVERRIDES)}*; start a new run with --config to change it")
    return from_dict(Config, apply_overrides(to_dict(config), overrides))


class StopRequest:
    """SIGINT / SIGTERM while training: finish the current step, save 'latest', say how to resume.

    A second Ctrl-C stops at once (the last saved checkpoint still resumes).
    """

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        tqdm.write(f"{signal.Signals(signum).name}: saving after this step (again to stop at once)")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class StepBatchSampler:
    """Batch ``step`` is drawn from a generator seeded by (seed, step): resuming at any step is exact.

    Distributed, every rank draws the same global batch of ``batch_size * world_size`` indices (with
    replacement) and takes its own slice, so the ranks split each batch without any communication.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0,
                 world_size: int = 1):
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for step in range(self.start, self.stop):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            indices = torch.randint(self.n, (self.batch_size * self.world_size,), generator=g)
            yield indices[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.stop - self.start


def save_checkpoint(directory: Path, policy: Policy, config: Config, optimizer, scheduler, ema: EMA | None,
                    step: int, best: float, seconds: float, world_size: int) -> None:
    """The weights to evaluate (EMA if enabled) plus everything --resume needs, atomically."""
    state = {"step": step, "best_val_metric": best, "train_seconds": seconds, "world_size": world_size,
             "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             # A copy: state_dict() shares storage with the parameters, which ema.applied overwrites below.
             "raw_weights": {k: v.detach().clone() for k, v in policy.state_dict().items()} if ema else None,
             "ema": ema.shadow if ema else None}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with ema.applied(policy) if ema else contextlib.nullcontext():
        save_policy(policy, directory, run_config=to_dict(config), extra={TRAINING_STATE: state})


class NonFiniteStep(Exception):
    """The loss or gradient norm of a step is NaN or inf; raised before the optimizer step."""


def train_step(model, policy: Policy, batch: dict, device: torch.device, autocast, optimizer, scheduler,
               ema: EMA | None, trainable: list, grad_clip: float, micro_batches: int = 1
               ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """One update (LeRobot's ``update_policy``): forward, backward, clip, optimizer and schedule, EMA.

    With ``micro_batches`` > 1 the batch goes through forward and backward in that many slices whose
    gradients add up (each loss scaled by 1 / micro_batches; DDP synchronizes on the last only), so
    the update is the whole batch's while the activations are one slice's. Returns (loss, metrics,
    gradient norm), averaged over the slices. Raises NonFiniteStep before touching the weights when
    the loss or the gradient norm is not finite, so they stay those of the last good step.
    """
    batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    optimizer.zero_grad(set_to_none=True)
    loss, metrics = accumulate_gradients(model, batch, autocast, micro_batches)
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, grad_clip or float("inf"))
    if not bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):  # one sync per step
        raise NonFiniteStep(f"loss {loss.item():.4g}, gradient norm {grad_norm.item():.4g}")
    optimizer.step()
    scheduler.step()
    if ema:
        ema.update(policy)
    return loss, metrics, grad_norm


def load_training_state(checkpoint: Path) -> dict:
    """The optimizer, schedule, RNG and EMA state that --resume needs, with a clear error if damaged."""
    path = checkpoint / TRAINING_STATE
    if not path.is_file():
        raise MissingResourceError(f"{path} is missing: {checkpoint} was not written by train.py, so it cannot "
                                   "be resumed (evaluate it, or start a new run with --config)")
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # torch raises RuntimeError or pickle errors for truncated files
        raise DamagedFileError(f"{path} is damaged ({str(error).splitlines()[0][:120]}); resume is not possible "
                               "from it; start a new run, or evaluate the checkpoint's weights") from None


def load_data(config: Config, features: Features, info: DistInfo) -> tuple[ChunkDataset, dict]:
    """The chunk dataset and its normalization statistics; collected or imported on first use.

    Distributed, rank 0 makes the data and caches the statistics first, then the others read them.
    """
    if not info.is_main:
        barrier(info)
    store, episodes = ensure_dataset(config.env, config.data, progress=info.is_main)
    stats = compute_stats(store, config.policy.relative_actions, config.policy.chunk_size)
    if info.is_main:
        barrier(info)
    if store.features != replace(features, privileged_dim=0):
        raise DamagedFileError(f"dataset {store.root} has {store.features}, the config describes {features}; "
                               "delete that folder to rebuild it")
    if store.privileged_dim != features.privileged_dim and features.privileged_dim:
        raise UserError(f"policy.aux_state_weight needs the simulator's {features.privileged_dim}-dim state, and "
                        f"dataset {store.root} has {store.privileged_dim or 'none'} (recorded before EasyVLA kept "
                        "it): move that folder away to collect or import it again, or set policy.aux_state_weight=0")
    return ChunkDataset(store, config.policy.n_obs_steps, config.policy.chunk_size, episodes), stats


def make_loader(dataset: ChunkDataset, config: Config, start_step: int, info: DistInfo,
                device: torch.device) -> DataLoader:
    """Batches from ``start_step`` on; batch ``step`` depends only on (seed, step) (exact resume)."""
    sampler = StepBatchSampler(len(dataset), config.train.batch_size, config.seed, start_step, config.train.steps,
                               info.rank, info.world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=config.train.num_workers,
                      pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(config.seed))  # keeps the global RNG untouched


def restore_training_state(checkpoint: Path, state: dict, policy: Policy, optimizer, scheduler, ema: EMA | None,
                           world_size: int) -> tuple[int, float, float]:
    """Load weights from ``checkpoint`` and the optimizer, schedule, EMA and RNG from its ``state``
    (``load_training_state``): -> (step, best metric, seconds)."""
    if state.get("world_size", 1) != world_size:
        raise UserError(f"{checkpoint.parent.parent} was trained by {state.get('world_size', 1)} process(es); resume "
                        f"it with as many (now {world_size}), since the effective batch and data slices depend on it")
    load_weights(policy, checkpoint)  # the saved weights are the EMA's when EMA is on
    if ema:
        policy.load_state_dict(state["raw_weights"])
        device = next(policy.parameters()).device
        ema.shadow = {k: v.to(device) for k, v in state["ema"].items()}
        ema.updates = state["step"]
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    best = state.get("best_val_metric", state.get("best_val_success", -1.0))
    return state["step"], best, state.get("train_seconds", 0.0)  # seconds: absent in early checkpoints


def validate(policy: Policy, config: Config, ema: EMA | None, writer: SummaryWriter, step: int) -> float:
    """Roll out on validation layouts/seeds; returns the number that picks 'best' (higher is better)."""
    with ema.applied(policy) if ema else contextlib.nullcontext():
        result = evaluate_policy(policy, config.env, split="val", episodes=config.eval.val_episodes,
                                 n_envs=config.eval.n_envs, sample_seed=config.seed, videos=1, progress=False)
    policy.train()
    success = result["overall"]["success_rate"]
    writer.add_scalar("val/success_rate", success, step)
    for task, summary in result["tasks"].items():
        writer.add_scalar(f"val/success_rate/{task}", summary["success_rate"], step)
    if result["video_frames"]:
        video = torch.from_numpy(result["video_frames"][0]).permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
        writer.add_video("val/rollout", video[:, ::2], step, fps=20)
    spec = benchmark(config.env.name)
    if spec.headline != "success_rate":  # e.g. PushT's score, finer-grained than success
        writer.add_scalar(f"val/{spec.headline_name}", result["overall"][spec.headline], step)
    return result["overall"][spec.headline]


def main() -> None:
    args = parse_args()
    if args.resume:
        run_dir = args.resume
        config = resumed_config(run_dir, args.set)
    else:
        config = load_config(args.config, args.set)
        run_dir = args.run_dir or Path("runs") / f"{Path(args.config).stem}_{time.strftime('%Y%m%d-%H%M%S')}"
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--run-dir {run_dir} is a file, not a folder; name a new or existing run folder")
    info, device = init_distributed(resolve_device(config.device))
    keep_freed_memory()  # a step's blocks are reused, not page-faulted in again every step
    try:
        train(args, config, broadcast_object(run_dir, info), device, info)
    finally:
        shutdown(info)


def train(args: argparse.Namespace, config: Config, run_dir: Path, device: torch.device, info: DistInfo) -> None:
    # One writer per run directory: a second train.py on it is refused while this one runs.
    with DirectoryLock(run_dir, "train.py") if info.is_main else contextlib.nullcontext():
        if info.is_main:
            for name in ("latest", "best"):  # half-written saves of a killed run
                remove_stale_temporaries(run_dir / "checkpoints" / name)
        _train(args, config, run_dir, device, info)


def _train(args: argparse.Namespace, config: Config, run_dir: Path, device: torch.device, info: DistInfo) -> None:
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    torch.manual_seed(config.seed)
    log = print if info.is_main else (lambda *_: None)

    # The model first: a missing text model or weights file stops the run before any long data work.
    features = config.features
    policy = build_policy(config.model, features)
    latest = run_dir / "checkpoints" / "latest"
    if args.resume:  # so does a damaged checkpoint (the weights load again after the data, over its statistics)
        resume_state = load_training_state(latest)
        load_weights(policy, latest)

    dataset, stats = load_data(config, features, info)
    log(f"data: {dataset.store.root} ({len(dataset.episodes)} episodes, {len(dataset)} samples)")
    policy.normalizer.fit(stats)
    policy.to(device)
    if config.train.channels_last:
        policy.to(memory_format=torch.channels_last)
    counts = policy.parameter_counts()
    log(f"policy: {counts['trainable'] / 1e6:.2f}M trainable, {counts['frozen'] / 1e6:.2f}M frozen parameters; "
        f"{config.model_summary()}; device {device}")
    n_micro = config.train.micro_batches
    micro = f" (in {n_micro} micro-batches of {config.train.batch_size // n_micro})" if n_micro > 1 else ""
    log(f"batch: {config.train.batch_size} per process{micro} x {info.world_size} process(es) = "
        f"{config.train.batch_size * info.world_size} effective")
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config.train)
    scheduler = make_scheduler(optimizer, config.train)
    ema = EMA(policy, config.train.ema_decay) if config.train.ema_decay > 0 else None
    start_step, best, seconds_before = 0, -1.0, 0.0  # seconds: training wall clock of earlier (resumed) runs
    if args.resume:
        start_step, best, seconds_before = restore_training_state(latest, resume_state, policy,
                                                                  optimizer, scheduler, ema, info.world_size)
        log(f"resumed {run_dir} at step {start_step}")
    model = policy
    if info.enabled:  # gradients are averaged over ranks in backward; `policy` stays the plain module
        model = DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(config.seed * 1_000_003 + 7919 * info.rank + start_step)  # own noise per rank

    loader = make_loader(dataset, config, start_step, info, device)
    log(precision_note(config.train.precision, device))
    autocast = autocast_for(config.train.precision, device)
    writer = SummaryWriter(run_dir / "tb") if info.is_main else None
    policy.train()
    step = start_step
    started = time.monotonic()

    def elapsed() -> float:
        return seconds_before + time.monotonic() - started

    latest_dir = run_dir / "checkpoints" / "latest"
    last_saved = {"step": start_step if args.resume else None, "time": time.monotonic()}

    def save_latest() -> None:
        save_checkpoint(latest_dir, policy, config, optimizer, scheduler, ema, step, best, elapsed(), info.world_size)
        last_saved.update(step=step, time=time.monotonic())

    bar = tqdm(loader, initial=start_step, total=config.train.steps, desc="train", dynamic_ncols=True,
               disable=not info.is_main)
    stop = StopRequest()
    with stop:
        for batch in bar:
            try:
                loss, metrics, grad_norm = train_step(model, policy, batch, device, autocast, optimizer, scheduler,
                                                      ema, trainable, config.train.grad_clip,
                                                      config.train.micro_batches)
            except NonFiniteStep as error:
                good = (f"the last good checkpoint is {latest_dir} (step {last_saved['step']}); resume it with "
                        f"python train.py --resume {run_dir}" if last_saved["step"] is not None
                        else "no checkpoint was saved yet")
                raise TrainingDiverged(f"training diverged at step {step + 1}: {error}; {good}, or start again with "
                                       f"a lower train.lr (now {config.train.lr:g})") from None
            step += 1

            if not info.is_main:  # the other ranks only train
                if stop.signal is not None or (args.stop_after is not None and step >= args.stop_after):
                    return
                continue
            if step % config.train.log_every == 0 or step == config.train.steps:
                scalars = {"loss": loss.item(), "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm.item(),
                           "minutes": elapsed() / 60, **metrics}  # minutes: learning curves against wall clock
                for name, value in scalars.items():
                    writer.add_scalar(f"train/{name}", value, step)
                bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.1e}")
            if config.eval.every and step % config.eval.every == 0 and config.eval.val_episodes:
                metric = validate(policy, config, ema, writer, step)
                tqdm.write(f"step {step}: validation {benchmark(config.env.name).headline_name} "
                           f"{metric:.2f} (best {max(best, metric):.2f})")
                if metric >= best:  # a tie goes to the later, longer-trained checkpoint
                    best = metric
                    save_checkpoint(run_dir / "checkpoints" / "best", policy, config, optimizer, scheduler, ema,
                                    step, best, elapsed(), info.world_size)
            minutes = (time.monotonic() - last_saved["time"]) / 60
            if (step % config.train.save_every == 0 or step == config.train.steps
                    or (config.train.save_minutes and minutes >= config.train.save_minutes)):
                save_latest()
            if stop.signal is not None:
                if last_saved["step"] != step:
                    save_latest()
                bar.close()
                print(f"{signal.Signals(stop.signal).name} at step {step}: saved {latest_dir}; resume with: "
                      f"python train.py --resume {run_dir}", flush=True)
                raise SystemExit(130)
            if args.stop_after is not None and step >= args.stop_after:
                print(f"stopping after step {step} (--stop-after)")
                return
    bar.close()
    train_seconds = elapsed()
    if info.enabled:
        difference = replica_max_difference(policy, info)
        log(f"replicas after {step} steps: max parameter difference from rank 0 = {difference:.3g}")
        if difference != 0:
            raise RuntimeError("the DDP replicas drifted apart; a parameter may be updated outside backward")
        if not info.is_main:
            return

    # No validation rollouts during training: the last weights are the ones to evaluate.
    best_dir = run_dir / "checkpoints" / "best"
    if not best_dir.exists():
        save_checkpoint(best_dir, policy, config, optimizer, scheduler, ema, step, best, train_seconds, info.world_size)
    writer.close()
    if not args.no_final_eval:
        training = {"steps": step, "batch_size": config.train.batch_size, "processes": info.world_size,
                    "effective_batch_size": config.train.batch_size * info.world_size,
                    "seconds": round(train_seconds, 1), "device": str(device), "hardware": device_name(device),
                    "precision": resolve_precision(config.train.precision, device),
                    "checkpoint": "best on validation" if best >= 0 else "last"}
        final_evaluation(run_dir, config, device, training)


def final_evaluation(run_dir: Path, config: Config, device: torch.device, training: dict) -> None:
    """Evaluate checkpoints/best on the held-out seeds; write eval_results.json and print the table."""
    best_dir = run_dir / "checkpoints" / "best"
    final = load_policy(best_dir, device).for_inference()
    result = evaluate_policy(final, config.env, split="eval", episodes=config.eval.episodes, n_envs=config.eval.n_envs,
                             sample_seed=config.seed, videos=config.eval.videos, video_dir=run_dir / "videos")
    result.pop("video_frames")
    result["training"] = {**training, "checkpoint_step": load_training_state(best_dir)["step"]}
    (run_dir / "eval_results.json").write_text(json.dumps(result, indent=2))
    print(format_table(result))
    print(f"results: {run_dir / 'eval_results.json'}")

if __name__ == "__main__":
    run_main(main)
