"""Success rates with honest uncertainty."""

import math


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (well behaved at 0% and 100%)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # At 0% or 100% the bound on that side is exact; computed, it would be off by a rounding error.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == trials else min(1.0, center + half)
    return low, high


def summarize(episodes: list[dict]) -> dict:
    """Success rate, its 95% Wilson interval, mean steps to success, and mean of any float metric."""
    n = len(episodes)
    wins = sum(bool(e["success"]) for e in episodes)
    low, high = wilson_interval(wins, n)
    steps = [e["steps"] for e in episodes if e["success"]]
    summary = {"episodes": n, "successes": wins, "success_rate": wins / n if n else 0.0,
               "ci95_low": low, "ci95_high": high,
               "mean_steps_to_success": sum(steps) / len(steps) if steps else None}
    extra = {k for e in episodes for k, v in e.items() if isinstance(v, float) and k not in ("success",)}
    for key in sorted(extra):
        summary[f"mean_{key}"] = sum(e[key] for e in episodes) / n
    return summary
