"""Validation curves against training steps, samples seen and wall-clock time, from TensorBoard logs.

    python -m evaluation.learning_curve runs/metaworld_reach_20261122-101500 [--tag val/success_rate]
    python -m evaluation.learning_curve runs/a runs/b --plot curve.png      # PushT: score and success

With ``--plot`` every run is drawn against samples seen (steps x train.batch_size, read from the
run's config.yaml) and against training minutes, its final held-out evaluation
(``eval_results.json``) marked at the end, and, for PushT, the published anchors on the same axes.
"""

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.errors import ArgumentParser, DamagedFileError, MissingResourceError, run_main
from envs.pusht import PushT

if TYPE_CHECKING:  # matplotlib is imported when a plot is asked for
    from matplotlib.figure import Figure

# (label, samples seen, success rate, score) published for PushT from images; see BENCHMARKS.md.
PUSHT_ANCHORS = [("LeRobot diffusion (GPU)", 12.8e6, 0.654, 0.955, "black"),
                 ("VLA-0 SmolVLM2 (pretrained 0.5B VLM)", 0.48e6, 0.781, None, "grey")]


def run_config(run_dir: Path) -> dict:
    """A run folder's config.yaml as train.py wrote it (the keys read here checked); a one-line error else."""
    if not run_dir.is_dir():
        raise MissingResourceError(f"{run_dir} does not exist or is not a folder; pass a run folder train.py wrote "
                                   "(runs/NAME)")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise MissingResourceError(f"{run_dir} is not a run folder (no config.yaml); pass the folder train.py wrote "
                                   "(runs/NAME), not a checkpoint inside it")
    try:
        config = yaml.safe_load(path.read_text())
        if not isinstance(config["train"]["batch_size"], int) or not isinstance(config["env"]["name"], str):
            raise TypeError("train.batch_size or env.name has the wrong type")  # what the curves read
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError) as error:
        raise DamagedFileError(f"{path} is not a config train.py wrote ({type(error).__name__}: {error}); "
                               "restore it (checkpoints/latest/config.json holds the same config, under 'config')") from None
    return config


def _events(run_dir: Path) -> EventAccumulator | None:
    if not (run_dir / "tb").is_dir():  # a run folder deleted after its results were kept
        return None
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return events


def scalar_tags(run_dir: Path) -> list[str]:
    """The scalar tags a run's TensorBoard log holds ([] without a log)."""
    events = _events(run_dir)
    return sorted(events.Tags()["scalars"]) if events else []


def learning_curve(run_dir: Path, tag: str = "val/success_rate") -> list[tuple[int, float, float]]:
    """(step, minutes since the first logged scalar, value) for each logged point of ``tag`` ([] if none)."""
    events = _events(run_dir)
    if events is None or tag not in events.Tags()["scalars"]:
        return []
    start = min(e.wall_time for t in events.Tags()["scalars"] for e in events.Scalars(t))
    return [(e.step, (e.wall_time - start) / 60, e.value) for e in events.Scalars(tag)]


def training_minutes(run_dir: Path) -> dict[int, float]:
    """step -> training minutes as train.py logged them (excludes data preparation; resumes add up)."""
    return {step: value for step, _, value in learning_curve(run_dir, "train/minutes")}


def held_out_label(final: dict) -> str:
    """How a final evaluation names its episodes in a legend: its first seed ("eval seeds 2,000,000..")."""
    seeds = [e["seed"] for task in final.get("tasks", {}).values() for e in task.get("episodes_detail", [])]
    return f"eval seeds {min(seeds):,}.." if seeds else "held-out evaluation"


def plot_runs(runs: list[Path], png: Path, labels: list[str] | None = None) -> "Figure":
    """Validation score (PushT) or success against samples seen and minutes; final evaluations marked.
    A row per metric some run logged: Meta-World runs log success only, PushT runs score and success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("val/score", "score (avg max coverage)"), ("val/success_rate", "success rate"))
    curves = [{tag: learning_curve(run, tag) for tag, _ in metrics} for run in runs]  # each log read once here
    rows = [(tag, name) for tag, name in metrics if any(run_curves[tag] for run_curves in curves)]
    if not rows:
        raise MissingResourceError("no run has a validation curve (val/score or val/success_rate) to plot")
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 4 * len(rows) + 0.5), sharey="row", squeeze=False)
    pusht = False
    for i, run in enumerate(runs):
        config = run_config(run)
        batch = config["train"]["batch_size"]
        pusht = pusht or config["env"]["name"] == PushT.name  # its anchors go on the axes
        minutes = training_minutes(run)
        label = labels[i] if labels else run.name
        final = json.loads((run / "eval_results.json").read_text()) if (run / "eval_results.json").is_file() else None
        for row, (tag, name) in enumerate(rows):
            curve = curves[i][tag]
            if not curve:
                continue
            steps = [s for s, _, _ in curve]
            values = [v for _, _, v in curve]
            line, = axes[row, 0].plot([s * batch for s in steps], values, marker="o", label=f"{label} (validation)")
            axes[row, 1].plot([minutes.get(s, m) for s, m, _ in curve], values, marker="o", color=line.get_color())
            if final is not None:
                key = "mean_max_reward" if tag == "val/score" else "success_rate"
                value = final["overall"].get(key)
                training = final.get("training", {})
                # The evaluated checkpoint's step (the best on validation), else the end of training.
                at = training.get("checkpoint_step", training.get("steps", steps[-1]))
                if value is not None:
                    axes[row, 0].plot([at * batch], [value], marker="*", markersize=14, linestyle="none",
                                      color=line.get_color(), label=f"{label} ({held_out_label(final)}, that checkpoint)")
                    at_minutes = minutes.get(at, training.get("seconds", 0) / 60)
                    axes[row, 1].plot([at_minutes], [value], marker="*", markersize=14, linestyle="none",
                                      color=line.get_color())
            axes[row, 0].set_ylabel(name)
    if pusht:
        for label, samples, success, score, color in PUSHT_ANCHORS:
            for row, (tag, _) in enumerate(rows):
                value = score if tag == "val/score" else success
                if value is not None:
                    axes[row, 0].plot([samples], [value], marker="D", linestyle="none", color=color,
                                      label=f"{label}, images")
    for ax in axes[:, 0]:
        ax.set_xscale("log")
        ax.set_xlabel("training samples seen (steps x batch)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 1]:
        ax.set_xlabel("training minutes (this machine)")
        ax.grid(alpha=0.3)
    # One legend below the axes, so that it hides no point; the success row carries every label.
    handles, names = max((ax.get_legend_handles_labels() for ax in axes[:, 0]), key=lambda h: len(h[1]))
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    return fig  # for a notebook or a test


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--tag", default="val/success_rate")
    parser.add_argument("--plot", type=Path, help="write a PNG of every run's curves (score and success)")
    parser.add_argument("--labels", nargs="+", help="legend label per run (default: the folder names)")
    args = parser.parse_args()
    if args.labels and len(args.labels) != len(args.run_dirs):
        parser.error(f"--labels: {len(args.labels)} labels for {len(args.run_dirs)} runs")
    configs = [run_config(run) for run in args.run_dirs]  # every folder checked before any work
    if args.plot:
        plot_runs(args.run_dirs, args.plot, args.labels)
        print(f"plot: {args.plot}")
        return
    for run, config in zip(args.run_dirs, configs):
        curve = learning_curve(run, args.tag)
        if not curve:
            tags = [t for t in scalar_tags(run) if t.startswith("val/")]
            raise MissingResourceError(f"{run}: no '{args.tag}' in the TensorBoard log; its validation tags: "
                                       f"{', '.join(tags) or 'none (eval.every=0 logs no validation curve)'}")
        minutes = training_minutes(run)
        batch = config["train"]["batch_size"]
        print(f"{run}\n| step | samples | training minutes | {args.tag} |\n|---|---|---|---|")
        for step, wall, value in curve:
            print(f"| {step} | {step * batch:,} | {minutes.get(step, wall):.1f} | {value:.3f} |")


if __name__ == "__main__":
    run_main(main)
