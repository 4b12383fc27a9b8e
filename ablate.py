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
import sys
from pathlib import Path

from tqdm import tqdm

from core.errors import ArgumentParser, UserError, run_main
from experiment.ablation import check_same_grid, expand, parse_grid, run_cell, validate_cells, write_report


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_config_arguments(config_help="base YAML config",
                                set_help="overrides for every cell (the budget: train.steps, train.batch_size, ...)")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                        help="axes of the grid; 'seed' axes are averaged over in the report")
    parser.add_argument("--out", type=Path, required=True, help="results folder (rerun to resume)")
    parser.add_argument("--report-only", action="store_true", help="report the finished cells, train nothing")
    args = parser.parse_args()

    cells = expand(parse_grid(args.grid))
    validate_cells(args.config, args.set, cells)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder; name a new or existing results folder")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        check_same_grid(args.out, {"config": args.config, "grid": args.grid, "set": args.set})
    results, failed = {}, []
    for cell in tqdm(cells, desc="ablation cells", dynamic_ncols=True, disable=args.report_only):
        try:
            results[cell] = run_cell(cell, args.config, args.set, args.out, train=not args.report_only)
        except FileNotFoundError:  # --report-only: not finished yet
            continue
        except RuntimeError as error:  # one broken cell should not cost the others
            failed.append(cell.name)
            tqdm.write(str(error))
            continue
        tqdm.write(f"{cell.name}: success {results[cell]['overall']['success_rate']:.0%}")
    if not results:
        raise UserError(f"no finished cells under {args.out / 'runs'}; run without --report-only to train them")
    table = write_report(cells, results, args.out, f"Ablation of {args.config}")
    print(table)
    print(f"report: {args.out / 'summary.md'}, {args.out / 'runs.csv'}, {args.out / 'ablation.png'}")
    if failed:
        sys.exit(f"{len(failed)} cell(s) failed: {failed}; rerun the same command to retry them")


if __name__ == "__main__":
    run_main(main)
