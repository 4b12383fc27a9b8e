"""Ablation grids: expand a grid of config overrides into cells, train and evaluate each, and report.

A cell is one run of the real ``train.py`` (in a subprocess, so a crash in one cell cannot poison the
next) under ``OUT/runs/<cell>``. A cell is finished when its ``eval_results.json`` exists; an
interrupted cell continues with ``train.py --resume``. Rerunning the same command therefore skips
finished cells and completes the rest.

The report groups cells by setting (every override except ``seed``): success rate pooled over the
seeds' episodes with a 95% Wilson interval (equal episodes per seed, so it equals the mean over
seeds), the per-seed rates, the PushT score, and the training wall clock.
"""

import csv
import itertools
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserError
from evaluation.learning_curve import learning_curve
from evaluation.metrics import wilson_interval
from experiment.config import load_config

REPO = Path(__file__).resolve().parents[1]
SEED_KEY = "seed"
RESULTS = "eval_results.json"
CSV_FIELDS = ["cell", "setting", "seed", "episodes", "successes", "success_rate", "ci95_low", "ci95_high",
              "score", "mean_max_coverage", "mean_final_coverage", "mean_steps_to_success", "train_steps",
              "batch_size", "train_minutes"]


@dataclass(frozen=True)
class Cell:
    overrides: tuple[str, ...]  # "key=value", one per grid axis, in the grid's order

    @property
    def name(self) -> str:
        """A directory-safe name, e.g. ``action_head.type=flow__seed=1``."""
        return "__".join(re.sub(r"[^A-Za-z0-9_.=+-]", "_", o) for o in self.overrides)

    @property
    def setting(self) -> str:
        """What the cell ablates: its overrides without the seed."""
        return ", ".join(o for o in self.overrides if o.split("=", 1)[0] != SEED_KEY) or "base"

    @property
    def seed(self) -> int | None:
        seeds = [o.split("=", 1)[1] for o in self.overrides if o.split("=", 1)[0] == SEED_KEY]
        return int(seeds[0]) if seeds else None


def parse_grid(axes: list[str]) -> list[tuple[str, list[str]]]:
    """``["action_head.type=diffusion,flow", "seed=0,1"]`` -> ``[(key, values), ...]``.

    Values split on commas outside brackets, so ``action_head.down_dims=[32,64],[64,128]`` is two values.
    """
    grid = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        if not sep or not key or not values:
            raise UserError(f"grid axis '{axis}' must look like key=value1,value2")
        if key in (k for k, _ in grid):
            raise UserError(f"grid axis '{key}' given twice")
        split = [v.strip() for v in re.split(r",(?![^\[]*\])", values)]
        if len(set(split)) != len(split):
            raise UserError(f"grid axis '{key}' repeats a value: {split}")
        grid.append((key, split))
    return grid


def expand(grid: list[tuple[str, list[str]]]) -> list[Cell]:
    """Every combination, the first axis varying slowest."""
    cells = [Cell(tuple(f"{k}={v}" for k, v in zip([k for k, _ in grid], combo)))
             for combo in itertools.product(*[values for _, values in grid])]
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise UserError("two grid values map to the same run directory name; make them differ in letters or digits")
    return cells


def check_same_grid(out: Path, spec: dict) -> None:
    """Refuse to continue a results folder that was started with another config, grid or budget."""
    path = out / "grid.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != spec:
            raise UserError(f"{out} holds a grid run with {before}, not {spec}: "
                            "use another --out, or the same arguments to resume it")
    else:
        path.write_text(json.dumps(spec, indent=2))


def validate_cells(config_path: str, fixed: list[str], cells: list[Cell]) -> None:
    """Load every cell's config now, so a typo fails in a second and not after hours of training."""
    for cell in cells:
        load_config(config_path, [*fixed, *cell.overrides])


def run_cell(cell: Cell, config_path: str, fixed: list[str], out: Path, train: bool = True) -> dict:
    """Train and evaluate ``cell`` unless it is finished; resume it when it was interrupted.

    With ``train=False``, only read a finished cell (FileNotFoundError otherwise).
    """
    run_dir = out / "runs" / cell.name
    results = run_dir / RESULTS
    if results.is_file():
        return json.loads(results.read_text())
    if not train:
        raise FileNotFoundError(results)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "checkpoints" / "latest").is_dir():
        command = ["--resume", str(run_dir)]
    else:
        command = ["--config", config_path, "--run-dir", str(run_dir), "--set", *fixed, *cell.overrides]
    # Runs in the caller's directory, so relative paths in the arguments mean what they meant there.
    with open(run_dir / "train.log", "a") as log:
        done = subprocess.run([sys.executable, str(REPO / "train.py"), *command], stdout=log, stderr=log)
    if done.returncode != 0 or not results.is_file():
        raise RuntimeError(f"cell {cell.name} failed (exit {done.returncode}); see {run_dir / 'train.log'}. "
                           "Rerun the same command to resume it.")
    return json.loads(results.read_text())


def cell_row(cell: Cell, result: dict) -> dict:
    overall, training = result["overall"], result.get("training", {})
    return {
        "cell": cell.name, "setting": cell.setting, "seed": cell.seed, "episodes": overall["episodes"],
        "successes": overall["successes"], "success_rate": overall["success_rate"],
        "ci95_low": overall["ci95_low"], "ci95_high": overall["ci95_high"],
        "score": overall.get("mean_max_reward"), "mean_max_coverage": overall.get("mean_max_coverage"),
        "mean_final_coverage": overall.get("mean_final_coverage"),
        "mean_steps_to_success": overall["mean_steps_to_success"], "train_steps": training.get("steps"),
        "batch_size": training.get("batch_size"),
        "train_minutes": round(training["seconds"] / 60, 2) if "seconds" in training else None,
    }


def summarize_settings(rows: list[dict]) -> list[dict]:
    """One entry per setting (in grid order): pooled success with its Wilson interval, over seeds."""
    settings: dict[str, list[dict]] = {}
    for row in rows:
        settings.setdefault(row["setting"], []).append(row)
    summary = []
    for setting, runs in settings.items():
        wins, n = sum(r["successes"] for r in runs), sum(r["episodes"] for r in runs)
        low, high = wilson_interval(wins, n)
        scores = [r["score"] for r in runs if r["score"] is not None]
        minutes = [r["train_minutes"] for r in runs if r["train_minutes"] is not None]
        summary.append({
            "setting": setting, "seeds": len(runs), "episodes": n, "success_rate": wins / n if n else 0.0,
            "ci95_low": low, "ci95_high": high, "per_seed": [r["success_rate"] for r in runs],
            "score_mean": float(np.mean(scores)) if scores else None,
            "score_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,  # across seeds
            "train_minutes": float(np.mean(minutes)) if minutes else None,
            "cells": [r["cell"] for r in runs],
        })
    return summary


def markdown_table(summary: list[dict]) -> str:
    with_score = any(s["score_mean"] is not None for s in summary)
    header = "| setting | seeds | success (episodes pooled) | 95% CI (evaluation noise) | per seed |"
    header += " score (mean ± sd over seeds) |" if with_score else ""
    header += " train min / run |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for s in summary:
        line = (f"| {s['setting']} | {s['seeds']} | {s['success_rate']:.1%} | [{s['ci95_low']:.1%}, "
                f"{s['ci95_high']:.1%}] | {' / '.join(f'{r:.0%}' for r in s['per_seed'])} |")
        if with_score and s["score_mean"] is not None:
            spread = f" ± {s['score_std']:.3f}" if s["score_std"] is not None else ""
            line += f" {s['score_mean']:.3f}{spread} |"
        elif with_score:
            line += " - |"
        line += f" {s['train_minutes']:.1f} |" if s["train_minutes"] is not None else " - |"
        lines.append(line)
    return "\n".join(lines)


def plot(summary: list[dict], out: Path, png: Path) -> None:
    """Success with 95% intervals, the score (PushT) with its spread over seeds, training-loss curves."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    has_score = all(s["score_mean"] is not None for s in summary)
    fig, axes = plt.subplots(1, 3 if has_score else 2, figsize=(16 if has_score else 12, 4.5))
    x = np.arange(len(summary))
    names = [s["setting"] for s in summary]
    rates = np.array([s["success_rate"] for s in summary])
    errors = np.array([[r - s["ci95_low"] for r, s in zip(rates, summary)],
                       [s["ci95_high"] - r for r, s in zip(rates, summary)]])
    axes[0].bar(x, rates, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    axes[0].set_ylabel("success rate (95% Wilson CI)")
    if has_score:
        scores = [s["score_mean"] for s in summary]
        spread = [s["score_std"] or 0.0 for s in summary]
        axes[1].bar(x, scores, yerr=spread, capsize=4, color="tab:green", alpha=0.8)
        axes[1].set_ylabel("score: avg max coverage (± sd over seeds)")
    for bars in axes[:-1]:
        bars.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        bars.set_ylim(0, 1)
    curves = axes[-1]
    for s in summary:
        losses = [learning_curve(out / "runs" / cell, "train/loss") for cell in s["cells"]]
        losses = [c for c in losses if c]
        if not losses:
            continue
        length = min(len(c) for c in losses)
        steps = [p[0] for p in losses[0][:length]]
        mean = np.mean([[p[2] for p in c[:length]] for c in losses], axis=0)
        curves.plot(steps, mean, label=s["setting"])
    curves.set_yscale("log")
    curves.set_xlabel("training step")
    curves.set_ylabel("training loss, mean over seeds")
    curves.set_title("losses of different heads differ in kind", fontsize=9)
    if curves.lines:
        curves.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def write_report(cells: list[Cell], results: dict[Cell, dict], out: Path, title: str) -> str:
    """runs.csv, summary.md, summary.json and ablation.png in ``out``; returns the Markdown table."""
    rows = [cell_row(cell, results[cell]) for cell in cells if cell in results]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize_settings(rows)
    table = markdown_table(summary)
    note = ("Success is pooled over all seeds' episodes; its Wilson interval covers evaluation noise only, "
            "the per-seed column shows how much training seeds vary. Score: the Diffusion Policy PushT score, "
            "the average over episodes of the maximum coverage reward.")
    (out / "summary.md").write_text(f"# {title}\n\n{table}\n\n{note}\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(summary, out, out / "ablation.png")
    return table
