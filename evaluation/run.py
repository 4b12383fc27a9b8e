"""Evaluate a policy on every task of its config: success with 95% intervals, a per-task table, videos."""

from pathlib import Path

import numpy as np

from envs import EnvConfig, benchmark, episode_seed
from evaluation.metrics import summarize, wilson_interval
from evaluation.rollout import run_episodes, save_video
from policy.base import Policy


def evaluate_policy(policy: Policy, env: EnvConfig, split: str = "eval", episodes: int = 50,
                    first_seed: int | None = None, n_envs: int = 5, sample_seed: int = 0, videos: int = 0,
                    video_dir: Path | None = None, progress: bool = True, protocol: str = "seeds") -> dict:
    """Roll out on ``split`` layouts (train | val | eval; disjoint seeds) for each task of ``env``.

    ``first_seed`` replaces the split's seeds with ``first_seed, first_seed + 1, ...``; ``sample_seed``
    seeds the heads' sampling noise. ``protocol`` is one of the benchmark's (``Benchmark.protocols``):
    "seeds" draws each episode's layout from its seed; Meta-World's "metaworld" takes the benchmark's
    own pre-drawn layouts, episode i on layout i (mod 50).

    Returns:
        {"split", "tasks": {task: summary}, "overall": summary pooled over tasks}, where a summary has
        success_rate, ci95_low/high, mean_steps_to_success (and coverage for PushT), plus the episodes
        and the videos' paths relative to the run directory (``video_dir``'s parent).
    """
    tasks, pooled = {}, []
    video_frames: list[np.ndarray] = []
    spec = benchmark(env.name)
    if protocol not in spec.protocols:
        raise ValueError(f"{env.name} has no evaluation protocol '{protocol}'; known: {', '.join(spec.protocols)}")
    for task in env.tasks:
        seeds = [first_seed + i if first_seed is not None else episode_seed(env, split, i)
                 for i in range(episodes)]
        options = [spec.episode_options(protocol, task, i) for i in range(episodes)]
        results, task_videos = run_episodes(policy, env, task, seeds, n_envs, video_episodes=videos,
                                            sample_seed=sample_seed, progress=progress, options=options)
        tasks[task] = {**summarize(results), "episodes_detail": results}
        pooled += results
        if video_dir is not None:
            for i, frames in enumerate(task_videos):  # recorded relative to the run directory
                path = save_video(frames, video_dir / f"{task}_{i:02d}", spec.fps)
                tasks[task].setdefault("videos", []).append(f"{video_dir.name}/{path.name}")
        video_frames += task_videos
    overall = summarize(pooled)
    overall["mean_task_success"] = float(np.mean([t["success_rate"] for t in tasks.values()]))
    return {"split": split, "protocol": protocol, "tasks": tasks, "overall": overall, "video_frames": video_frames}


def format_table(result: dict) -> str:
    """Markdown table: one row per task, and the mean for multi-task."""
    lines = ["| task | success | 95% CI | mean steps to success | episodes |", "|---|---|---|---|---|"]
    for task, s in result["tasks"].items():
        steps = f"{s['mean_steps_to_success']:.0f}" if s["mean_steps_to_success"] is not None else "-"
        extra = (f" (score {s['mean_max_reward']:.3f}, max coverage {s['mean_max_coverage']:.3f})"
                 if "mean_max_reward" in s else "")
        lines.append(f"| {task} | {s['success_rate']:.0%}{extra} | [{s['ci95_low']:.0%}, {s['ci95_high']:.0%}] | "
                     f"{steps} | {s['episodes']} |")
    if len(result["tasks"]) > 1:
        o = result["overall"]
        low, high = wilson_interval(o["successes"], o["episodes"])
        lines.append(f"| **mean** | {o['mean_task_success']:.0%} | [{low:.0%}, {high:.0%}] pooled | - | {o['episodes']} |")
    return "\n".join(lines)
