"""Ablate design choices in one command: train and evaluate every cell of a grid, then report.

    python ablate.py --config configs/pusht_state.yaml \\
        --grid action_head.type=diffusion,autoregressive,regression,flow seed=0,1,2 \\
        --set train.steps=2000 train.batch_size=64 eval.every=0 --out results/pusht_state_heads

Every combination of the --grid axes is one cell, trained with the real train.py (the --set overrides,
the budget, apply to all cells) and evaluated on the held-out seeds or layouts, one cell at a time.
OUT gets runs.csv (every run), summary.md (success and 95% interval per setting, pooled over seeds),
summary.json and ablation.png (bar chart with intervals, learning curves). Interrupted? Run the same
command again: finished cells are kept, an unfinished one resumes from its last checkpoint.
"""

import argparse
from pathlib import Path

from tqdm import tqdm

from evaluation.ablation import expand, parse_grid, run_cell, validate_cells, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="base YAML config")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                        help="axes of the grid; 'seed' axes are averaged over in the report")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every cell (the budget: train.steps, train.batch_size, ...)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (rerun to resume)")
    parser.add_argument("--report-only", action="store_true", help="report the finished cells, train nothing")
    args = parser.parse_args()

    cells = expand(parse_grid(args.grid))
    validate_cells(args.config, args.set, cells)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "command.txt").write_text(
        f"python ablate.py --config {args.config} --grid {' '.join(args.grid)} "
        f"--set {' '.join(args.set)} --out {args.out}\n")
    results = {}
    for cell in tqdm(cells, desc="ablation cells", dynamic_ncols=True):
        if args.report_only:
            try:
                results[cell] = run_cell(cell, args.config, args.set, args.out, train=False)
            except FileNotFoundError:
                continue
        else:
            results[cell] = run_cell(cell, args.config, args.set, args.out)
            tqdm.write(f"{cell.name}: success {results[cell]['overall']['success_rate']:.0%}")
    if not results:
        raise SystemExit(f"no finished cells under {args.out / 'runs'}")
    table = write_report(cells, results, args.out, f"Ablation of {args.config}")
    print(table)
    print(f"report: {args.out / 'summary.md'}, {args.out / 'runs.csv'}, {args.out / 'ablation.png'}")


if __name__ == "__main__":
    main()
