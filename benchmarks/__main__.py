"""Every benchmark in one command, as Markdown tables (the README's numbers come from here).

    python -m benchmarks [--set text.model_name=PATH] [--out results/benchmarks.md] [--quick]

1. Training throughput per head and precision on the Meta-World reach config, with the fraction of
   this machine's matmul peak measured in the same run, a profile of the bf16 step (fp32 only on
   a CPU that emulates bf16), and what fraction of the peak each convolution and linear layer reaches.
2. ``select_action`` latency at batch 1 per head and inference precision, against 80 Hz (Meta-World)
   and 10 Hz (PushT); the diffusion and flow re-plans against their number of denoising steps, with
   and without the U-Net's fast path, per denoiser (U-Net, MLP, residual MLP), and eager against compiled.
3. Parameters and peak training-step memory per config and head, against the 1 GiB budget.
4. Throughput and memory against batch size, cameras and chunk size.
Synthetic inputs of each config's shapes; no data or environment is needed. About 10 minutes on 2 cores.
"""

import argparse
import time
from pathlib import Path

import torch

from action_head import HEADS
from action_head.denoisers import DENOISER_KINDS
from benchmarks import kernels, latency, memory, scaling, throughput
from core.device import cpu_description, native_bf16
from core.errors import ArgumentParser, run_main
from experiment.config import load_config
from policy.base import INFERENCE_PRECISIONS

REACH = "configs/metaworld_reach.yaml"
DENOISING_STEPS = [1, 2, 4, 10]
LATENCY_CONFIGS = ["configs/metaworld_reach.yaml", "configs/pusht.yaml"]
MEMORY_CONFIGS = ["configs/metaworld_reach.yaml", "configs/metaworld_mt10.yaml", "configs/pusht.yaml",
                  "configs/pusht_state.yaml"]


def describe_override(override: str) -> str:
    """``key=value`` for the report's header, with a local path cut to its last two parts (the header
    is committed: it must name what a reader can find, e.g. a package's model folder, not this machine)."""
    key, _, value = override.partition("=")
    path = Path(value).expanduser()
    if not path.is_absolute() or not path.exists():
        return override
    return f"{key}=<local>/{'/'.join(path.parts[-2:])}"


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides for every config (may be repeated)")
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    parser.add_argument("--quick", action="store_true", help="fewer steps and calls (a smoke run)")
    args = parser.parse_args()
    heads = HEADS.names()
    steps, calls = (2, 16) if args.quick else (6, 200)
    # A CPU without native bf16 emulates it many times slower (README): its bf16 rows would take hours.
    native = native_bf16(torch.device("cpu"))
    precisions = list(throughput.DTYPES) if native else ["fp32"]
    inference_precisions = list(INFERENCE_PRECISIONS) if native else ["fp32"]
    sections = [f"# EasyVLA benchmarks\n\n{time.strftime('%Y-%m-%d %H:%M')}, {cpu_description()}, "
                f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU. Overrides: "
                f"{' '.join(map(describe_override, args.set)) or 'none'}."
                f"{'' if native else ' This CPU emulates bf16: fp32 rows only.'}"]

    print(sections[0], flush=True)

    def section(title: str, body: str) -> None:
        sections.append(f"## {title}\n\n{body}")
        print(f"\n## {title}\n\n{body}", flush=True)

    section(f"Training throughput ({REACH}; synthetic batch)",
            throughput.throughput_table(REACH, args.set, heads, precisions, steps))
    profiled = precisions[-1]  # bf16 where it is native, else fp32
    config = load_config(REACH, [*args.set, f"action_head.type={heads[0]}", f"train.precision={profiled}"])
    section(f"Where a {profiled} training step's time goes ({heads[0]} head, 3 steps, top operators by self time)",
            f"```\n{throughput.profile_step(config)}\n```")
    section(f"The convolution and linear layers against the {profiled} matmul peak ({heads[0]} head, costliest "
            "first; `python -m benchmarks.kernels`)",
            kernels.kernel_report(config, top=12, repeats=2 if args.quick else 5))
    for path in LATENCY_CONFIGS:
        for precision in inference_precisions:
            section(f"select_action latency at batch 1 ({path}, {precision} inference)",
                    latency.latency_table(path, args.set, heads, calls, precision))
    for precision in inference_precisions:
        section(f"Re-plan p50 / p95 ms against denoising steps ({REACH}, {precision} inference)",
                latency.steps_table(REACH, args.set, list(latency.DENOISING_HEADS), DENOISING_STEPS, calls, precision))
    section(f"Re-plan p50 / p95 ms per denoiser against denoising steps ({REACH}, fp32 inference)",
            latency.steps_table(REACH, args.set, list(latency.DENOISING_HEADS), DENOISING_STEPS, calls, "fp32",
                                denoisers=DENOISER_KINDS))
    section(f"The U-Net re-plan with and without its fast path ({REACH}, fp32, interleaved in one process)",
            latency.fast_path_table(REACH, args.set, list(latency.DENOISING_HEADS), calls))
    section(f"The re-plan eager and compiled ({REACH}, fp32, compile_for_inference, interleaved in one process)",
            latency.compile_table(REACH, args.set, heads, calls))
    section("Parameters and peak training-step memory", memory.memory_table(MEMORY_CONFIGS, args.set, heads))
    axes = scaling.AXES if not args.quick else {k: v[:2] for k, v in scaling.AXES.items()}
    section(f"Scaling ({REACH}, diffusion head, its precision)", scaling.scaling_table(REACH, args.set, axes))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n\n".join(sections) + "\n")
        print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    run_main(main)
