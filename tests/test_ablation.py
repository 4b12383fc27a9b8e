"""The ablation runner: grid expansion, pooled summaries, and a real two-cell grid that resumes."""

import csv
import sys
from pathlib import Path

import pytest

import ablate
from core.errors import UserError
from experiment.ablation import Cell, expand, parse_grid, summarize_settings

REPO = Path(__file__).resolve().parents[1]


def test_grid_expands_every_combination_with_bracketed_values():
    grid = parse_grid(["action_head.type=diffusion,flow", "action_head.down_dims=[16,32],[32,64]", "seed=0,1"])
    assert grid[1] == ("action_head.down_dims", ["[16,32]", "[32,64]"])
    cells = expand(grid)
    assert len(cells) == 8 and len(set(cells)) == 8
    assert cells[0].overrides == ("action_head.type=diffusion", "action_head.down_dims=[16,32]", "seed=0")
    assert cells[1].seed == 1 and cells[0].setting == cells[1].setting  # seeds are averaged, not compared
    assert "/" not in cells[0].name and "[" not in cells[0].name
    with pytest.raises(UserError, match="key=value1,value2"):
        parse_grid(["seed"])
    with pytest.raises(UserError, match="twice"):
        parse_grid(["seed=0", "seed=1"])
    with pytest.raises(UserError, match="repeats"):
        parse_grid(["seed=0,0"])


def test_settings_pool_episodes_over_seeds():
    rows = [{"cell": f"c{i}", "setting": s, "seed": i, "episodes": 10, "successes": k, "success_rate": k / 10,
             "score": k / 10, "train_minutes": 1.0} for i, (s, k) in enumerate([("a", 2), ("a", 6), ("b", 10)])]
    summary = summarize_settings(rows)
    assert [s["setting"] for s in summary] == ["a", "b"]
    a = summary[0]
    assert a["success_rate"] == pytest.approx(0.4) and a["episodes"] == 20 and a["per_seed"] == [0.2, 0.6]
    assert a["ci95_low"] < 0.4 < a["ci95_high"]
    assert a["score_mean"] == pytest.approx(0.4) and a["score_std"] == pytest.approx(0.2828, abs=1e-4)  # sample sd
    assert summary[1]["ci95_high"] == 1.0


def test_ablate_runs_a_grid_reports_it_and_resumes(tmp_path, tiny_text_model, monkeypatch, capsys):
    from test_pusht import synthetic_arrays, write_zarr

    zarr_path = write_zarr(tmp_path / "pusht.zarr", synthetic_arrays(lengths=(6, 5)))
    out = tmp_path / "ablation"
    argv = ["ablate.py", "--config", str(REPO / "configs" / "pusht_state.yaml"),
            "--grid", "action_head.type=regression", "seed=0,1", "--out", str(out),
            "--set", f"text.model_name={tiny_text_model}", f"data.root={tmp_path / 'data'}", f"data.path={zarr_path}",
            "env.max_episode_steps=10", "policy.d_model=32", "policy.chunk_size=4", "policy.n_action_steps=2",
            "fusion.n_heads=2", "state.hidden=32", "train.steps=2", "train.batch_size=4", "train.warmup_steps=1",
            "train.log_every=1", "eval.every=0", "eval.episodes=2", "eval.n_envs=2", "eval.videos=0"]
    monkeypatch.setattr(sys, "argv", argv)
    ablate.main()
    assert "| action_head.type=regression | 2 |" in capsys.readouterr().out
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["0", "1"] and all(r["episodes"] == "2" for r in rows)
    assert all(float(r["train_minutes"]) >= 0 and r["train_steps"] == "2" for r in rows)
    assert (out / "ablation.png").stat().st_size > 10_000
    assert "95% CI" in (out / "summary.md").read_text()

    # Interrupt the second cell after its training (its results are lost): a rerun keeps the first
    # cell untouched and resumes the second from its checkpoint instead of training it again.
    finished, lost = (out / "runs" / Cell(("action_head.type=regression", f"seed={s}")).name for s in (0, 1))
    first_mtime = (finished / "eval_results.json").stat().st_mtime_ns
    (lost / "eval_results.json").unlink()
    ablate.main()
    assert (finished / "eval_results.json").stat().st_mtime_ns == first_mtime
    assert (lost / "eval_results.json").is_file()
    assert "resumed" in (lost / "train.log").read_text()

    # Continuing the folder with another budget would mix configurations: refused before any training.
    monkeypatch.setattr(sys, "argv", [*argv, "train.steps=3"])
    with pytest.raises(UserError, match="holds a grid run"):
        ablate.main()
