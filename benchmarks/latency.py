"""Inference latency at batch 1, encoders included, per head.

    python -m benchmarks.latency --config configs/metaworld_reach.yaml [--heads diffusion flow] [--calls 200]
    python -m benchmarks.latency --config configs/metaworld_reach.yaml --precision bf16   # as evaluate.py --precision
    python -m benchmarks.latency --config configs/metaworld_reach.yaml --denoising-steps 1 2 4 10 [--denoisers unet resmlp]
    python -m benchmarks.latency --config configs/metaworld_reach.yaml --fast-path
    python -m benchmarks.latency --config configs/metaworld_reach.yaml --compile

Two numbers per head: ``select_action`` (one control step; the model runs every
``n_action_steps`` calls and the other calls pop the queue) and one re-plan
(``predict_action_chunk`` of the steps ``select_action`` executes: ``n_action_steps``, or the whole
chunk when ensembling), which bounds the worst control step. Compare with the control period:
100 ms at 10 Hz (PushT), 12.5 ms at 80 Hz (Meta-World). ``--whole-chunk`` times re-plans of the
whole chunk (the autoregressive head decodes all of it then, as it did at every re-plan before).
``--fast-path`` times the U-Net heads' re-plan with and without its fast path, interleaved in one
process (separate runs drift by more than the difference); ``--compile`` every head's re-plan with and
without ``compile_for_inference`` (evaluate.py --compile).
"""

import argparse
import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch

from action_head import HEADS
from action_head.denoisers import DENOISER_KINDS, plain_inference
from core.errors import ArgumentParser, UserError, positive_int, run_main
from core.keys import OBS_IMAGE, OBS_STATE, TASK
from data.synthetic import synthetic_batch, unit_normalizer_stats
from envs import benchmark, features_for
from experiment.config import head_overrides, load_config
from policy.backbones import build_policy
from policy.base import INFERENCE_PRECISIONS


DENOISING_HEADS = ("diffusion", "flow")  # the heads with action_head.num_inference_steps


def percentiles_ms(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def inference_policy(config, features, precision: str):
    """A policy with random weights and unit statistics, set up as evaluate.py runs it, and a batch-1
    observation batch of its shapes."""
    torch.manual_seed(config.seed)
    policy = build_policy(config.model, features)
    policy.normalizer.fit(unit_normalizer_stats(features))
    policy.for_inference(precision)
    return policy, synthetic_batch(features, config.policy.n_obs_steps, config.policy.chunk_size, 1)


def measure_head(config, features, calls: int, precision: str = "fp32", whole_chunk: bool = False
                 ) -> dict[str, float]:
    policy, batch = inference_policy(config, features, precision)
    obs = {OBS_STATE: batch[OBS_STATE][:, 0], TASK: batch[TASK]}
    if features.has_images:
        obs[OBS_IMAGE] = batch[OBS_IMAGE][:, 0]
    steps = None if whole_chunk else policy.replan_steps  # as select_action asks
    for _ in range(3):  # warm-up: allocator, caches, the instruction's text embedding
        policy.predict_action_chunk(batch, steps=steps)
    step, plan = [], []
    policy.reset()
    for _ in range(calls):
        start = time.perf_counter()
        policy.select_action(obs)
        step.append(time.perf_counter() - start)
    for _ in range(max(10, calls // config.policy.n_action_steps)):
        start = time.perf_counter()
        policy.predict_action_chunk(batch, steps=steps)
        plan.append(time.perf_counter() - start)
    (step50, step95), (plan50, plan95) = percentiles_ms(step), percentiles_ms(plan)
    return {"step_p50": step50, "step_p95": step95, "step_mean": float(np.mean(step)) * 1e3,
            "plan_p50": plan50, "plan_p95": plan95}


def latency_table(config_path: str, overrides: list[str], heads: list[str], calls: int,
                  precision: str = "fp32", whole_chunk: bool = False) -> str:
    """Markdown: per head, select_action and re-plan latency against the env's control period."""
    lines = []
    for head, head_set in head_overrides(config_path, overrides, heads):
        config = load_config(config_path, head_set)
        hz = benchmark(config.env.name).fps
        r = measure_head(config, features_for(config.env), calls, precision, whole_chunk)
        verdict = "yes" if r["plan_p95"] < 1000 / hz else "no"
        lines.append(f"| {head} | {r['step_p50']:.2f} / {r['step_p95']:.2f} / {r['step_mean']:.2f} | "
                     f"{r['plan_p50']:.1f} / {r['plan_p95']:.1f} | {hz} Hz ({1000 / hz:.1f} ms): {verdict} |")
    header = ["| head | select_action p50 / p95 / mean (ms) | re-plan p50 / p95 (ms) | "
              "p95 re-plan within the control period? |", "|---|---|---|---|"]
    return "\n".join(header + lines)


def steps_table(config_path: str, overrides: list[str], heads: list[str], steps: list[int], calls: int,
                precision: str = "fp32", denoisers: tuple[str, ...] = ()) -> str:
    """Markdown: re-plan p50 / p95 of the denoising heads against their number of denoising steps; with
    ``denoisers``, a row per head and denoiser (``action_head.denoiser``, each at its default size)."""
    lines = []
    for head, head_set in head_overrides(config_path, overrides, heads):
        for denoiser in denoisers or (None,):
            chosen = [f"action_head.denoiser={denoiser}"] if denoiser else []
            cells = []
            for n in steps:
                config = load_config(config_path, [*head_set, *chosen, f"action_head.num_inference_steps={n}"])
                r = measure_head(config, features_for(config.env), calls, precision)
                cells.append(f"{r['plan_p50']:.1f} / {r['plan_p95']:.1f}")
            lines.append(f"| {head}{f', {denoiser}' if denoiser else ''} | " + " | ".join(cells) + " |")
    header = ["| head | " + " | ".join(f"{n} steps" for n in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    return "\n".join(header + lines)


def interleaved_replans(replans: dict[str, Callable[[], object]], calls: int, rounds: int = 4
                        ) -> dict[str, list[float]]:
    """Seconds per call of each re-plan function, timed in ``rounds`` alternating blocks of
    ``calls // rounds`` calls each after one warm-up call per block (separate runs drift by more than
    the differences these tables show)."""
    times: dict[str, list[float]] = {name: [] for name in replans}
    for _ in range(rounds):
        for name, replan in replans.items():
            replan()  # warm this variant's kernels and caches
            for _ in range(max(1, calls // rounds)):
                start = time.perf_counter()
                replan()
                times[name].append(time.perf_counter() - start)
    return times


def fast_path_table(config_path: str, overrides: list[str], heads: list[str], calls: int, rounds: int = 4,
                    precision: str = "fp32") -> str:
    """Markdown: the re-plan of each U-Net head on its fast path against ``plain_inference()``, the same
    policy and observation, interleaved."""
    lines = []
    for head, head_set in head_overrides(config_path, overrides, heads):
        config = load_config(config_path, head_set)
        if config.action_head.denoiser != "unet":
            continue
        policy, batch = inference_policy(config, features_for(config.env), precision)

        def replan(plain: bool, policy=policy, batch=batch) -> None:
            with plain_inference() if plain else contextlib.nullcontext():
                policy.predict_action_chunk(batch, steps=policy.replan_steps)

        times = interleaved_replans({"plain": lambda: replan(True), "fast": lambda: replan(False)}, calls, rounds)
        (plain50, plain95), (fast50, fast95) = percentiles_ms(times["plain"]), percentiles_ms(times["fast"])
        lines.append(f"| {head} | {plain50:.1f} / {plain95:.1f} | {fast50:.1f} / {fast95:.1f} | "
                     f"{plain50 / fast50:.2f}x |")
    header = ["| head | plain re-plan p50 / p95 (ms) | fast path p50 / p95 (ms) | p50 speed-up |", "|---|---|---|---|"]
    return "\n".join(header + lines)


def compile_table(config_path: str, overrides: list[str], heads: list[str], calls: int, rounds: int = 4,
                  precision: str = "fp32") -> str:
    """Markdown: the re-plan of each head eager against ``compile_for_inference()`` (two policies with the
    same weights, interleaved), the first compiled re-plan's seconds (the compile), and the largest
    difference between the two chunks for one generator."""
    lines = []
    for head, head_set in head_overrides(config_path, overrides, heads):
        config = load_config(config_path, head_set)
        features = features_for(config.env)
        eager, batch = inference_policy(config, features, precision)
        compiled, _ = inference_policy(config, features, precision)
        torch._dynamo.reset()  # each row compiles afresh: past dynamo's recompile limit a row would run eager
        compiled.compile_for_inference()
        start = time.perf_counter()
        fast = compiled.predict_action_chunk(batch, torch.Generator().manual_seed(0), steps=compiled.replan_steps)
        compile_s = time.perf_counter() - start
        plain = eager.predict_action_chunk(batch, torch.Generator().manual_seed(0), steps=eager.replan_steps)
        times = interleaved_replans(
            {name: lambda p=p, b=batch: p.predict_action_chunk(b, steps=p.replan_steps)
             for name, p in (("eager", eager), ("compiled", compiled))}, calls, rounds)
        (eager50, eager95), (comp50, comp95) = percentiles_ms(times["eager"]), percentiles_ms(times["compiled"])
        lines.append(f"| {head} | {eager50:.1f} / {eager95:.1f} | {comp50:.1f} / {comp95:.1f} | "
                     f"{eager50 / comp50:.2f}x | {compile_s:.0f} | {(fast - plain).abs().max().item():.1e} |")
    header = [("| head | eager re-plan p50 / p95 (ms) | compiled p50 / p95 (ms) | p50 speed-up | compile (s) | "
               "largest action difference |"), "|---|---|---|---|---|---|"]
    return "\n".join(header + lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments()
    parser.add_argument("--heads", nargs="+", default=HEADS.names())
    parser.add_argument("--calls", type=positive_int, default=200, help="select_action calls per head")
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    parser.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS,
                        help="inference precision, as evaluate.py --precision")
    parser.add_argument("--denoising-steps", type=positive_int, nargs="+", metavar="N",
                        help="instead: re-plan p50 / p95 of the diffusion and flow heads at each of these "
                             "numbers of denoising steps (evaluate.py --inference-steps)")
    parser.add_argument("--denoisers", nargs="+", choices=DENOISER_KINDS, default=(),
                        help="with --denoising-steps: a row per head and denoiser (action_head.denoiser)")
    parser.add_argument("--fast-path", action="store_true",
                        help="instead: the diffusion and flow re-plan with and without the U-Net's fast path")
    parser.add_argument("--compile", action="store_true",
                        help="instead: each head's re-plan eager and with compile_for_inference() "
                             "(evaluate.py --compile)")
    parser.add_argument("--whole-chunk", action="store_true",
                        help="time re-plans of the whole chunk, not of the n_action_steps select_action executes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.config}, batch 1, {args.threads} threads, device cpu, {args.precision}")
    if args.denoising_steps or args.fast_path:
        heads = [h for h in args.heads if h in DENOISING_HEADS]
        flag = "--fast-path" if args.fast_path else "--denoising-steps"
        if not heads:
            raise UserError(f"{flag} times the {' and '.join(DENOISING_HEADS)} heads; --heads names neither")
    if args.denoisers and not args.denoising_steps:
        raise UserError("--denoisers adds rows to the --denoising-steps table; give --denoising-steps N [N ...] too")
    if args.compile:
        print(compile_table(args.config, args.set, args.heads, args.calls, precision=args.precision))
    elif args.fast_path:
        print(fast_path_table(args.config, args.set, heads, args.calls, precision=args.precision))
    elif args.denoising_steps:
        print(steps_table(args.config, args.set, heads, args.denoising_steps, args.calls, args.precision,
                          tuple(args.denoisers)))
    else:
        print(latency_table(args.config, args.set, args.heads, args.calls, args.precision, args.whole_chunk))


if __name__ == "__main__":
    run_main(main)
