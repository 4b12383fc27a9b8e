"""Evaluate a trained policy in closed loop on held-out layouts (or the PushT benchmark seeds).

    python evaluate.py --env pusht                               # the latest PushT run, seeds 1000..1049
    python evaluate.py --env metaworld --task reach-v3 --checkpoint runs/metaworld_reach_20261122-101500
    python evaluate.py --env metaworld --episodes 20             # every task the checkpoint was trained on
    python evaluate.py --env metaworld --protocol metaworld      # Meta-World's own 50 layouts per task (MT1)
    python evaluate.py --env metaworld --precision bf16 --inference-steps 4   # a faster re-plan; check success
    python evaluate.py --env pusht --compile                     # the networks through torch.compile

Prints success with a 95% Wilson interval (and for PushT the score, the average max coverage
reward of the Diffusion Policy paper), and writes JSON results and videos into the run directory
(or beside a checkpoint folder that is not inside a run). Protocol: 50 episodes per task; PushT on
seeds 1000..1049, Meta-World on evaluation layouts no demonstration or validation used.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from core.device import native_bf16, precision_note, resolve_device
from core.errors import (
    ArgumentParser,
    MissingResourceError,
    UserError,
    non_negative_int,
    positive_int,
    run_main,
)
from envs import BENCHMARKS, benchmark
from evaluation.run import evaluate_policy, format_table
from experiment.config import checkpoint_config
from policy.base import INFERENCE_PRECISIONS
from policy.checkpoint import CONFIG, load_policy, readable


def find_checkpoint(path: Path | None, env: str, runs_dir: Path) -> Path:
    """A checkpoint directory: the one given (a run directory or a checkpoint), else the newest run for ``env``."""
    if path is not None:
        for candidate in (path, path / "checkpoints" / "best", path / "checkpoints" / "latest"):
            if (readable(candidate) / CONFIG).is_file():
                return candidate
        raise MissingResourceError(f"no checkpoint at {path} (looked for {CONFIG} in it and in "
                                   "checkpoints/best|latest); pass a run directory or a checkpoint folder")
    found = []
    for config_file in runs_dir.glob(f"*/checkpoints/*/{CONFIG}"):
        try:
            if json.loads(config_file.read_text())["config"]["env"]["name"] == env:
                found.append(config_file.parent)
        except (ValueError, KeyError, TypeError):  # a damaged checkpoint is not a candidate
            continue
    if not found:
        raise MissingResourceError(f"no {env} checkpoint under {runs_dir}/; train one first "
                                   f"({benchmark(env).train_command}) "
                                   "or pass --checkpoint RUN_DIR")
    newest_run = max({c.parent.parent for c in found}, key=lambda run: run.stat().st_mtime)
    best = newest_run / "checkpoints" / "best"
    return best if (best / CONFIG).is_file() else newest_run / "checkpoints" / "latest"


def set_inference_steps(policy, steps: int) -> None:
    """Evaluate a diffusion or flow head with ``steps`` denoising steps instead of its config's."""
    head = getattr(policy, "head", None)
    if head is None or not hasattr(head.config, "num_inference_steps"):
        raise UserError(f"--inference-steps: this checkpoint's model ({policy.config.model_summary()}) has no "
                        "denoising steps; only the diffusion and flow heads do")
    try:
        head.config = replace(head.config, num_inference_steps=steps)  # validated like the config key
    except UserError as error:
        raise UserError(f"--inference-steps: {error}") from None


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, choices=BENCHMARKS.names())
    parser.add_argument("--task", nargs="+", help="Meta-World task(s) (default: the checkpoint's training tasks)")
    parser.add_argument("--checkpoint", type=Path, help="run or checkpoint directory (default: newest run for --env)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--episodes", type=positive_int, default=50, help="episodes per task")
    parser.add_argument("--seed", type=non_negative_int, help="first episode seed (default: the env's evaluation "
                                                               "split; PushT: 1000)")
    parser.add_argument("--n-envs", type=positive_int, default=None, help="envs stepped together (default: config)")
    parser.add_argument("--videos", type=non_negative_int, default=2, help="episodes per task recorded as video")
    parser.add_argument("--protocol", default="seeds",
                        help="seeds: fresh layouts from the evaluation seeds (default); metaworld: Meta-World's own "
                             "50 pre-drawn layouts per task (metaworld.MT1), as published MT1/MT10 numbers use")
    parser.add_argument("--inference-steps", type=positive_int,
                        help="denoising steps of a diffusion or flow head (default: the checkpoint's config); "
                             "fewer re-plan faster")
    parser.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS,
                        help="bf16: the modular model's encoders and fusion under bf16 autocast, its head in fp32 "
                             "(whether it is faster depends on the hardware: python -m benchmarks.latency "
                             "--precision bf16)")
    parser.add_argument("--compile", action="store_true",
                        help="run the modular model's encoders, fusion and the head's repeated step (denoiser or "
                             "decoder) through torch.compile with frozen weights: faster re-plans where it pays "
                             "(python -m benchmarks.latency --compile) after a compile of seconds to a minute per "
                             "batch size; the same actions up to float rounding")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    args = parser.parse_args()
    device = resolve_device(args.device)

    if args.protocol not in benchmark(args.env).protocols:
        raise UserError(f"--protocol {args.protocol} is not a {args.env} protocol; use one of "
                        f"{', '.join(benchmark(args.env).protocols)}")
    checkpoint = find_checkpoint(args.checkpoint, args.env, args.runs_dir)
    config = checkpoint_config(checkpoint)
    if config.env.name != args.env:
        raise UserError(f"{checkpoint} is a {config.env.name} checkpoint, not {args.env}; "
                        f"use --env {config.env.name} or another --checkpoint")
    if args.task:
        from envs import check_env_config

        try:
            check_env_config(replace(config.env, tasks=list(args.task)))
        except UserError as error:
            raise UserError(f"--task: {error}") from None
        untrained = [t for t in args.task if t not in config.env.tasks]
        if untrained:
            print(f"note: {untrained} not among the training tasks {config.env.tasks} (zero-shot)")
        config.env.tasks = list(args.task)
    policy = load_policy(checkpoint, device).for_inference(args.precision)
    if args.precision == "bf16" and not native_bf16(device):
        print(precision_note(args.precision, device, fix="use --precision fp32"))
    if args.inference_steps is not None:
        set_inference_steps(policy, args.inference_steps)
    if args.compile:
        policy.compile_for_inference()
        print("compile: the encoders, fusion and the head's step through torch.compile (the first re-plans compile)")
    print(f"checkpoint {checkpoint}: {config.model_summary()}, tasks {config.env.tasks}")
    # Results go into the run (runs/NAME/ for runs/NAME/checkpoints/best), else beside the checkpoint.
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = evaluate_policy(policy, config.env, split="eval", episodes=args.episodes, first_seed=args.seed,
                             n_envs=args.n_envs or config.eval.n_envs, sample_seed=config.seed, videos=args.videos,
                             video_dir=run_dir / f"videos_eval_{stamp}", protocol=args.protocol)
    result.pop("video_frames")
    result["checkpoint"] = str(checkpoint)
    if args.inference_steps is not None:
        result["inference_steps"] = args.inference_steps
    result["precision"] = args.precision
    result["compile"] = args.compile
    out = run_dir / f"eval_{checkpoint.name}_{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"protocol: {args.protocol}, inference precision: {args.precision}")
    print(format_table(result))
    print(f"results: {out}")


if __name__ == "__main__":
    run_main(main)
