"""End to end on a tiny budget: the real train.py and evaluate.py, resuming, and interrupted collection."""

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import evaluate
import train
from benchmarks import goal_probe
from core.configuration import ConfigError
from core.errors import UserError
from data.collect import collect_metaworld
from data.episode_store import EpisodeStore
from experiment.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "metaworld_reach.yaml")
MT10_CONFIG = str(REPO / "configs" / "metaworld_mt10.yaml")


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory, tiny_text_model) -> list[str]:
    """A model and env small enough to train and roll out in seconds; data collected once per module."""
    data_root = tmp_path_factory.mktemp("data")
    return [f"text.model_name={tiny_text_model}", f"data.root={data_root}", "data.episodes_per_task=2",
            "env.cameras=[corner]", "env.image_size=[32,32]", "env.max_episode_steps=80",
            "policy.d_model=32", "policy.chunk_size=4", "policy.n_action_steps=2", "fusion.n_heads=2",
            "fusion.n_scene_layers=1", "fusion.n_state_layers=1", "state.hidden=32", "action_head.down_dims=[16,32]",
            "train.steps=4", "train.batch_size=4", "train.save_every=2", "train.log_every=1", "train.warmup_steps=1",
            "train.precision=fp32", "eval.every=2", "eval.val_episodes=1", "eval.episodes=1", "eval.n_envs=1",
            "eval.videos=1"]


def run_train(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    train.main()


def test_train_and_evaluate_scripts_end_to_end(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "train.py", "--config", CONFIG, "--run-dir", str(run), "--set",
                          *tiny_overrides], cwd=REPO, check=True, capture_output=True, text=True)
    assert "precision: fp32\n" in out.stdout  # the precision it computes in is logged
    for name in ("best", "latest"):
        files = {p.name for p in (run / "checkpoints" / name).iterdir()}
        assert {"model.safetensors", "config.json", "stats.json", "training_state.pt"} <= files
    assert list((run / "tb").glob("events.out.tfevents.*"))
    result = json.loads((run / "eval_results.json").read_text())
    assert result["split"] == "eval" and result["tasks"]["reach-v3"]["episodes"] == 1
    assert result["training"]["precision"] == "fp32" and result["training"]["hardware"]  # where its minutes came from
    assert list((run / "videos").glob("reach-v3_00.*"))

    out = subprocess.run([sys.executable, "evaluate.py", "--env", "metaworld", "--checkpoint", str(run),
                          "--episodes", "1", "--videos", "0"], cwd=REPO, check=True, capture_output=True, text=True)
    assert "| reach-v3 |" in out.stdout
    written = sorted(run.glob("eval_best_*.json"))
    assert written and json.loads(written[-1].read_text())["overall"]["episodes"] == 1

    out = subprocess.run([sys.executable, "evaluate.py", "--env", "metaworld", "--checkpoint", str(run),
                          "--episodes", "2", "--videos", "0", "--protocol", "metaworld", "--precision", "bf16"],
                         cwd=REPO, check=True, capture_output=True, text=True)
    assert "protocol: metaworld, inference precision: bf16" in out.stdout and "| reach-v3 |" in out.stdout
    newest = max(run.glob("eval_best_*.json"), key=lambda p: p.stat().st_mtime)
    assert json.loads(newest.read_text())["protocol"] == "metaworld"
    assert json.loads(newest.read_text())["precision"] == "bf16"

    out = subprocess.run([sys.executable, "-m", "benchmarks.eval_speed", str(run / "checkpoints" / "best"),
                          "--episodes", "3", "--n-envs", "2"], cwd=REPO, check=True, capture_output=True, text=True)
    assert "| lockstep |" in out.stdout and "| slot refilling |" in out.stdout
    assert "per-episode results identical: True" in out.stdout


def test_multitask_config_trains_one_model_and_reports_each_task(tmp_path, tiny_overrides, monkeypatch, capsys):
    tasks = ["reach-v3", "pick-place-v3"]  # two of MT10 whose experts finish within the tiny step cap
    overrides = [*tiny_overrides, f"env.tasks=[{','.join(tasks)}]", "eval.every=0"]
    run = tmp_path / "runs" / "mt"
    run_train(monkeypatch, "--config", MT10_CONFIG, "--run-dir", str(run), "--no-final-eval", "--set", *overrides)
    config = load_config(MT10_CONFIG, overrides)
    store = EpisodeStore(config.data.dataset_dir(config.env))
    assert sorted(e["env_task"] for e in store.episodes) == sorted(tasks * 2)
    assert len({e["task"] for e in store.episodes}) == 2  # one instruction per task conditions the one model

    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--env", "metaworld", "--checkpoint", str(run),
                                      "--episodes", "1", "--videos", "0"])
    evaluate.main()
    out = capsys.readouterr().out
    assert "| reach-v3 |" in out and "| pick-place-v3 |" in out and "| **mean** |" in out
    result = json.loads(next(run.glob("eval_best_*.json")).read_text())
    assert list(result["tasks"]) == tasks and result["overall"]["episodes"] == 2


def test_evaluate_errors_say_what_to_do(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    run_train(monkeypatch, "--config", CONFIG, "--run-dir", str(run), "--no-final-eval",
              "--set", *tiny_overrides, "eval.every=0")
    with pytest.raises(UserError, match="is a metaworld checkpoint, not pusht"):
        monkeypatch.setattr(sys, "argv", ["evaluate.py", "--env", "pusht", "--checkpoint", str(run)])
        evaluate.main()
    with pytest.raises(UserError, match=r"--task: env.tasks: \['fly-v3'\] not among the metaworld tasks"):
        monkeypatch.setattr(sys, "argv", ["evaluate.py", "--env", "metaworld", "--checkpoint", str(run),
                                          "--task", "fly-v3"])
        evaluate.main()
    with pytest.raises(FileNotFoundError, match="train one first"):
        evaluate.find_checkpoint(None, "pusht", tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        evaluate.find_checkpoint(tmp_path / "missing", "metaworld", tmp_path)
    assert evaluate.find_checkpoint(None, "metaworld", tmp_path) == run / "checkpoints" / "best"


def test_aux_state_trains_on_the_recorded_simulator_state_and_an_old_store_is_refused(tmp_path, tiny_overrides,
                                                                                      monkeypatch):
    run = tmp_path / "run"
    run_train(monkeypatch, "--config", CONFIG, "--run-dir", str(run), "--no-final-eval",
              "--set", *tiny_overrides, "eval.every=0", "policy.aux_state_weight=1.0")
    weights = load_file(str(run / "checkpoints" / "latest" / "model.safetensors"))
    assert weights["aux_state.2.weight"].shape[0] == 39  # Meta-World's full observation
    config = load_config(CONFIG, tiny_overrides)
    store = EpisodeStore(config.data.dataset_dir(config.env))
    np.testing.assert_array_equal(store.privileged[:, :4], store.state)  # proprio is its first entries
    start, end = store.episode_bounds(0)
    goal = store.privileged[start:end, 36:39]
    assert np.ptp(goal, axis=0).max() == 0 and np.abs(goal).max() > 0  # the goal: fixed in an episode

    samples, _ = goal_probe.probe(str(run), episodes=1, steps=6, every=2)  # the head read back as a probe
    assert len(samples) == 3 and all(distance > 0 and error > 0 for distance, error in samples)
    assert sum(int(row.split("|")[2]) for row in goal_probe.table(samples).splitlines()[2:]) == 3

    old = tmp_path / "old_data"  # a store recorded before EasyVLA kept the simulator state
    shutil.copytree(store.root, old / store.root.name)
    (old / store.root.name / "frames" / "privileged.npy").unlink()
    with pytest.raises(UserError, match="has none .* move that folder away"):
        run_train(monkeypatch, "--config", CONFIG, "--run-dir", str(tmp_path / "run2"), "--no-final-eval",
                  "--set", *tiny_overrides, "eval.every=0", "policy.aux_state_weight=1.0", f"data.root={old}")


def test_first_frame_trains_and_rolls_out(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    run_train(monkeypatch, "--config", CONFIG, "--run-dir", str(run), "--set", *tiny_overrides, "eval.every=0",
              "eval.videos=0", "policy.first_frame=true")
    result = json.loads((run / "eval_results.json").read_text())
    assert result["tasks"]["reach-v3"]["episodes"] == 1
    assert "first_frame_embed" in load_file(str(run / "checkpoints" / "latest" / "model.safetensors"))
    with pytest.raises(UserError, match="no Meta-World state head"):
        goal_probe.probe(str(run), episodes=1, steps=2, every=1)


def test_resume_continues_exactly_where_a_killed_run_stopped(tmp_path, tiny_overrides, monkeypatch):
    common = ["--config", CONFIG, "--no-final-eval", "--set", *tiny_overrides, "eval.every=0",
              "vision.augment_shift=2", "fusion.dropout=0.1",  # augmentation and dropout draw from the RNG
              "train.ema_decay=0.9"]  # the EMA's warm-up depends on the step: resumed too
    run_train(monkeypatch, "--run-dir", str(tmp_path / "straight"), *common)
    run_train(monkeypatch, "--run-dir", str(tmp_path / "killed"), "--stop-after", "2", *common)
    assert json.loads((tmp_path / "killed/checkpoints/latest/config.json").read_text())
    run_train(monkeypatch, "--resume", str(tmp_path / "killed"), "--no-final-eval")
    straight = load_file(str(tmp_path / "straight/checkpoints/latest/model.safetensors"))
    resumed = load_file(str(tmp_path / "killed/checkpoints/latest/model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all((straight[k] == resumed[k]).all() for k in straight)


def test_resume_may_extend_the_budget(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    run_train(monkeypatch, "--config", CONFIG, "--run-dir", str(run), "--no-final-eval",
              "--set", *tiny_overrides, "eval.every=0")
    run_train(monkeypatch, "--resume", str(run), "--no-final-eval", "--set", "train.steps=6")
    assert torch.load(run / "checkpoints/latest/training_state.pt", weights_only=True)["step"] == 6


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    with pytest.raises(train.TrainingDiverged, match=r"diverged at step \d+: loss .*--resume " + str(run)):
        run_train(monkeypatch, "--config", CONFIG, "--run-dir", str(run), "--no-final-eval", "--set",
                  *tiny_overrides, "eval.every=0", "train.steps=50", "train.save_every=1", "train.warmup_steps=1",
                  "train.lr=1e30")
    state = load_file(str(run / "checkpoints/latest/model.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (run / "checkpoints" / "best").exists()  # nothing non-finite is ever chosen


def test_a_crash_between_the_checkpoint_renames_still_resumes(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    common = ["--set", *tiny_overrides, "eval.every=0"]
    run_train(monkeypatch, "--config", CONFIG, "--run-dir", str(run), "--no-final-eval", "--stop-after", "2", *common)
    checkpoints = run / "checkpoints"
    # The state a crash leaves after the first rename of a save: the complete old checkpoint aside,
    # no 'latest', and a half-written temporary folder.
    (checkpoints / "latest").rename(checkpoints / ".latest.old")
    (checkpoints / ".latest.k1ll3d").mkdir()
    (checkpoints / ".latest.k1ll3d" / "model.safetensors").write_bytes(b"half")
    run_train(monkeypatch, "--resume", str(run), "--no-final-eval")
    assert torch.load(checkpoints / "latest/training_state.pt", weights_only=True)["step"] == 4
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best", "latest"]  # no debris left


def test_ctrl_c_saves_and_a_second_writer_is_refused(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    command = [sys.executable, "train.py", "--config", CONFIG, "--run-dir", str(run), "--no-final-eval", "--set",
               *tiny_overrides, "eval.every=0", "train.steps=1000000", "train.save_every=1000000",
               "train.save_minutes=0"]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        deadline = time.monotonic() + 240
        while not re.search(r"\b[1-9]\d*/1000000\b", log.read_text()):  # a step has finished
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with pytest.raises(UserError, match=f"{run} is in use by another train.py"):
            run_train(monkeypatch, *command[2:])
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, log.read_text()
    assert f"resume with: python train.py --resume {run}" in out
    step = torch.load(run / "checkpoints/latest/training_state.pt", weights_only=True)["step"]
    assert step >= 1 and f"SIGINT at step {step}" in out
    assert "Traceback" not in log.read_text()


def test_interrupted_collection_recovers(tmp_path, tiny_overrides):
    config = load_config(CONFIG, tiny_overrides)
    root = tmp_path / "store"
    first = collect_metaworld(config.env, 1, root, progress=False)
    kept = first.episodes[0]
    (root / "episodes" / ".000001.tmpabc.npz").write_bytes(b"killed mid-write")
    store = collect_metaworld(config.env, 2, root, progress=False)
    assert store.num_episodes == 2 and store.episodes[0] == kept
    assert store.episodes[0]["seed"] != store.episodes[1]["seed"]
    assert EpisodeStore(root).num_frames == store.num_frames


def test_pusht_trains_from_a_zarr_and_evaluates(tmp_path, tiny_text_model, monkeypatch, capsys):
    from test_pusht import synthetic_arrays, write_zarr

    zarr_path = write_zarr(tmp_path / "pusht.zarr", synthetic_arrays(lengths=(6, 5)))
    run = tmp_path / "runs" / "pusht_state"
    overrides = [f"text.model_name={tiny_text_model}", f"data.root={tmp_path / 'data'}", f"data.path={zarr_path}",
                 "env.max_episode_steps=20", "policy.d_model=32", "policy.chunk_size=4", "policy.n_action_steps=2",
                 "fusion.n_heads=2", "state.hidden=32", "action_head.type=regression", "train.steps=2",
                 "train.batch_size=4", "train.warmup_steps=1", "eval.every=0"]
    run_train(monkeypatch, "--config", str(REPO / "configs" / "pusht_state.yaml"), "--run-dir", str(run),
              "--no-final-eval", "--set", *overrides)
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--env", "pusht", "--runs-dir", str(tmp_path / "runs"),
                                      "--episodes", "2", "--videos", "1"])
    evaluate.main()
    assert "| pusht |" in capsys.readouterr().out
    result = json.loads(next(run.glob("eval_best_*.json")).read_text())["tasks"]["pusht"]
    assert [e["seed"] for e in result["episodes_detail"]] == [1000, 1001]  # the benchmark's seeds
    assert {"mean_max_reward", "mean_max_coverage", "mean_final_coverage", "ci95_low"} <= set(result)
    assert list(run.glob("videos_eval_*/pusht_00.*"))
    assert all((run / video).is_file() for video in result["videos"])  # recorded relative to the run


def test_inference_steps_override_changes_only_the_sampler(tiny_text_model):
    from conftest import SMALL_FEATURES, fake_batch, small_config, unit_stats
    from policy.backbones import build_policy

    config = small_config(tiny_text_model, "flow")
    policy = build_policy(config.model, SMALL_FEATURES)
    policy.normalizer.fit(unit_stats(SMALL_FEATURES))
    policy.eval()
    batch = fake_batch(SMALL_FEATURES, config)
    default = policy.predict_action_chunk(batch, torch.Generator().manual_seed(0))
    evaluate.set_inference_steps(policy, 1)
    one_step = policy.predict_action_chunk(batch, torch.Generator().manual_seed(0))
    evaluate.set_inference_steps(policy, config.action_head.num_inference_steps)
    assert torch.equal(policy.predict_action_chunk(batch, torch.Generator().manual_seed(0)), default)
    assert not torch.allclose(one_step, default)  # one Euler step from the same noise lands elsewhere
    with pytest.raises(UserError, match="--inference-steps"):
        evaluate.set_inference_steps(build_policy(small_config(tiny_text_model, "regression").model, SMALL_FEATURES), 2)
    diffusion = build_policy(small_config(tiny_text_model, "diffusion").model, SMALL_FEATURES)
    with pytest.raises(UserError, match="--inference-steps: .*num_inference_steps"):
        evaluate.set_inference_steps(diffusion, 10_000)  # more than its training steps


@pytest.mark.parametrize("head", ["regression", "flow"])
def test_micro_batches_give_the_whole_batch_update(tiny_text_model, head):
    """train.micro_batches=4: the same loss and gradients as one pass over the batch (the activations
    are a quarter's), so a small GPU trains the same recipe."""
    import copy

    from core.keys import ACTION_IS_PAD
    from data.synthetic import synthetic_batch, unit_normalizer_stats
    from envs import features_for
    from experiment.optim import make_optimizer, make_scheduler
    from policy.backbones import build_policy

    config = load_config(str(REPO / "configs" / "pusht_state.yaml"),
                         [f"text.model_name={tiny_text_model}", f"action_head.type={head}", "fusion.dropout=0",
                          "train.batch_size=8"])
    features = features_for(config.env)
    torch.manual_seed(0)
    policy = build_policy(config.model, features)
    policy.normalizer.fit(unit_normalizer_stats(features))
    batch = synthetic_batch(features, config.policy.n_obs_steps, config.policy.chunk_size, 8)
    batch[ACTION_IS_PAD][:] = False  # with padded steps each slice's mean weighs its own valid steps
    results = []
    for micro_batches in (1, 4):
        model = copy.deepcopy(policy).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(trainable, config.train)
        torch.manual_seed(1)  # the flow head draws noise and times per sample, in batch order
        loss, metrics, grad_norm = train.train_step(model, model, batch, torch.device("cpu"), contextlib.nullcontext(),
                                                    optimizer, make_scheduler(optimizer, config.train), None,
                                                    trainable, 1.0, micro_batches)
        results.append((loss, grad_norm, [p.grad.clone() for p in trainable], [p.detach().clone() for p in trainable]))
    (loss1, norm1, grads1, weights1), (loss4, norm4, grads4, weights4) = results
    if head == "regression":  # deterministic: identical up to float summation order
        assert torch.allclose(loss1, loss4, atol=1e-6) and torch.allclose(norm1, norm4, rtol=1e-4)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads1, grads4))
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights1, weights4))
    else:  # the noise differs per slice; the update is still one finite step of the whole batch
        assert torch.isfinite(loss4) and torch.isfinite(norm4) and set(metrics) == {"mse"}
    assert any(not torch.equal(a, b) for a, b in zip(weights4, [p.detach() for p in policy.parameters()
                                                                if p.requires_grad]))


def test_micro_batches_must_divide_the_batch(tiny_text_model):
    with pytest.raises(ConfigError, match="train.micro_batches must be >= 1 and divide train.batch_size"):
        load_config(str(REPO / "configs" / "pusht_state.yaml"),
                    [f"text.model_name={tiny_text_model}", "train.batch_size=64", "train.micro_batches=3"])
