"""Every mistake a user can make at the command line ends in one ``error:`` line, not a traceback.

Each case runs the real entry point (train.py, evaluate.py, ablate.py) in its own process, forked
by ``tests/cli_runner.py`` after one import of the scripts (see there), and must exit non-zero
with exactly one line starting with ``error:`` that names the offending key, flag or file, and no
traceback. A few cases also run as plain ``python SCRIPT ...`` subprocesses, to cover the
``__main__`` wiring itself.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import unit_stats
from safetensors.torch import load_file, save_file

from core.configuration import to_dict
from envs import features_for
from experiment.config import load_config
from policy.checkpoint import CONFIG, WEIGHTS, save_policy
from policy.vla_policy import VLAPolicy

REPO = Path(__file__).resolve().parents[1]
PUSHT_STATE = str(REPO / "configs" / "pusht_state.yaml")
REACH = str(REPO / "configs" / "metaworld_reach.yaml")


def tiny_pusht_overrides(text_model: str) -> list[str]:
    return [f"text.model_name={text_model}", "policy.d_model=32", "fusion.n_heads=2", "fusion.n_scene_layers=1",
            "fusion.n_state_layers=1", "state.hidden=32", "action_head.down_dims=[16,32]", "policy.chunk_size=4",
            "policy.n_action_steps=2"]


def write_checkpoint(directory: Path, text_model: str) -> Path:
    """A tiny PushT-state checkpoint with the training state train.py --resume reads."""
    config = load_config(PUSHT_STATE, tiny_pusht_overrides(text_model))
    features = features_for(config.env)
    torch.manual_seed(0)
    policy = VLAPolicy(config.model, features)
    policy.normalizer.fit(unit_stats(features))
    optimizer = torch.optim.AdamW(policy.parameters())
    state = {"step": 1, "best_val_metric": -1.0, "train_seconds": 0.0, "world_size": 1,
             "optimizer": optimizer.state_dict(), "scheduler": {}, "torch_rng": torch.get_rng_state(),
             "raw_weights": None, "ema": None}
    return save_policy(policy, directory, run_config=to_dict(config), extra={"training_state.pt": state})


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_text_model) -> dict[str, str]:
    """Configs, checkpoints and runs, good and damaged, that the cases refer to by name."""
    root = tmp_path_factory.mktemp("user_errors")
    paths: dict[str, str] = {"tmp": str(root), "text": tiny_text_model}

    def config(name: str, text: str | bytes) -> None:
        path = root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        paths[name] = str(path)

    config("syntax.yaml", "train:\n  steps: [1, 2\n")
    config("indent.yaml", "train:\n  steps: 5\n lr: 3\n")
    config("duplicate.yaml", "train:\n  steps: 5\n  steps: 6\n")
    config("duplicate_section.yaml", "train:\n  steps: 5\ntrain:\n  lr: 1.0\n")
    config("empty.yaml", "")
    config("comments_only.yaml", "# nothing here\n")
    config("list.yaml", "- train\n- eval\n")
    config("binary.yaml", bytes(range(256)) * 4)

    good = root / "run" / "checkpoints" / "latest"
    write_checkpoint(good, tiny_text_model)
    paths["run"] = str(root / "run")
    paths["ckpt"] = str(good)

    def damaged(name: str, damage) -> None:
        run = root / name
        write_checkpoint(run / "checkpoints" / "latest", tiny_text_model)
        damage(run / "checkpoints" / "latest")
        paths[name] = str(run)

    damaged("weights_truncated", lambda d: truncate(d / WEIGHTS))
    damaged("weights_empty", lambda d: (d / WEIGHTS).write_bytes(b""))
    damaged("state_truncated", lambda d: truncate(d / "training_state.pt"))
    damaged("state_missing", lambda d: (d / "training_state.pt").unlink())
    damaged("config_garbage", lambda d: (d / CONFIG).write_text("{not json"))
    damaged("config_wrong", lambda d: (d / CONFIG).write_text(json.dumps({"config": {}, "features": {}})))
    damaged("config_missing", lambda d: (d / CONFIG).unlink())

    def flip_byte(d: Path) -> None:  # same size, valid header: only the digest can tell
        data = bytearray((d / WEIGHTS).read_bytes())
        data[-100] ^= 0xFF
        (d / WEIGHTS).write_bytes(bytes(data))

    damaged("weights_flipped", flip_byte)

    def nan_weights(d: Path) -> None:  # a diverged run's weights, with a matching digest
        state = load_file(str(d / WEIGHTS))
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(d / WEIGHTS))
        meta = json.loads((d / CONFIG).read_text())
        meta.pop("weights_sha256")
        (d / CONFIG).write_text(json.dumps(meta))

    damaged("weights_nan", nan_weights)
    (root / "empty_runs").mkdir()
    (root / "not_a_model").mkdir()
    (root / "not_a_zip.zip").write_text("hello")
    paths.update(empty_runs=str(root / "empty_runs"), not_a_model=str(root / "not_a_model"),
                 not_a_zip=str(root / "not_a_zip.zip"))
    return paths


def cases(f: dict[str, str]) -> list[tuple[str, str, list[str], str]]:
    """(name, script, args, text the error line must contain)."""
    tiny = tiny_pusht_overrides(f["text"])
    state = ["--config", PUSHT_STATE]

    def train_set(*overrides: str, expect: str, name: str | None = None):
        key = overrides[0].split("=")[0]
        return (name or f"set {overrides[0]}", "train.py", [*state, "--set", *tiny, *overrides], expect or key)

    rows = [
        # -- the config file ------------------------------------------------------------------
        ("missing config", "train.py", ["--config", f["tmp"] + "/nope.yaml"], "nope.yaml does not exist"),
        ("config is a directory", "train.py", ["--config", f["tmp"]], "is a directory"),
        ("yaml syntax", "train.py", ["--config", f["syntax.yaml"]], "syntax.yaml is not valid YAML (line"),
        ("yaml indentation", "train.py", ["--config", f["indent.yaml"]], "indent.yaml is not valid YAML"),
        ("duplicate key", "train.py", ["--config", f["duplicate.yaml"]], "key 'steps' appears twice"),
        ("duplicate section", "train.py", ["--config", f["duplicate_section.yaml"]], "key 'train' appears twice"),
        ("empty config", "train.py", ["--config", f["empty.yaml"]], "empty.yaml is empty"),
        ("comments-only config", "train.py", ["--config", f["comments_only.yaml"]], "comments_only.yaml is empty"),
        ("top-level list", "train.py", ["--config", f["list.yaml"]], "top level must be a mapping"),
        ("binary config", "train.py", ["--config", f["binary.yaml"]], "binary.yaml"),
        # -- values ---------------------------------------------------------------------------
        train_set("trian.steps=5", expect="unknown config key 'trian'"),
        train_set("train.lrr=1", expect="Did you mean 'lr'"),
        train_set("train.steps=ten", expect="train.steps: expected an integer"),
        train_set("train.steps=1.5", expect="train.steps: expected an integer"),
        train_set("train.steps=0", expect="train.steps must be >= 1"),
        train_set("train.batch_size=-1", expect="train.batch_size must be >= 1"),
        train_set("train.grad_clip=-1", expect="train.grad_clip must be >= 0"),
        train_set("train.grad_clip=.nan", expect="train.grad_clip: expected a finite number"),
        train_set("train.lr=.inf", expect="train.lr: expected a finite number"),
        train_set("train.lr=0", expect="train.lr must be > 0"),
        train_set("train.lr=-3e-4", expect="train.lr must be > 0"),
        train_set("train.warmup_steps=-10", expect="train.warmup_steps must be >= 0"),
        train_set("train.log_every=0", expect="train.log_every must be >= 1"),
        train_set("train.save_every=0", expect="train.save_every must be >= 1"),
        train_set("train.save_minutes=-1", expect="train.save_minutes must be >= 0"),
        train_set("train.weight_decay=-0.1", expect="train.weight_decay must be >= 0"),
        train_set("train.ema_decay=1.0", expect="train.ema_decay must be in [0, 1)"),
        train_set("train.precision=fp16", expect="train.precision: 'fp16' is not one of"),
        train_set("text.max_length=0", expect="text.max_length must be >= 8"),
        train_set("text.max_length=2", expect="text.max_length must be >= 8"),
        train_set("env.tasks=[fly-v3]", expect="env.tasks: ['fly-v3'] not among the pusht tasks"),
        train_set("env.tasks=[]", expect="env.tasks must name at least one task"),
        train_set("env.cameras=[front]", expect="env.cameras"),
        train_set("env.state=proprio", expect="env.state: 'proprio' is not a pusht state variant"),
        train_set("env.name=atari", expect="env.name: unknown benchmark 'atari'"),
        train_set("env.max_episode_steps=0", expect="env.max_episode_steps must be >= 1"),
        train_set("env.cameras=[top]", "env.image_size=[16,16]", expect="env.image_size"),
        train_set("action_head.type=transformer", expect="known: autoregressive, diffusion, flow, regression"),
        train_set("policy.n_action_steps=20", expect="policy.n_action_steps=20 must be in"),
        train_set("policy.chunk_size=0", expect="policy.chunk_size"),
        train_set("policy.state_dropout=1.5", expect="policy.state_dropout must be in [0, 1)"),
        train_set("eval.n_envs=0", expect="eval.n_envs must be >= 1, got 0"),
        train_set("eval.val_episodes=-1", expect="eval.val_episodes must be >= 0, got -1"),
        train_set("data.episodes_per_task=0", expect="data.episodes_per_task must be >= 1"),
        train_set("seed=abc", expect="seed: expected an integer"),
        train_set("seed=100000000000000000000", expect="seed must be in [0, 2**31), got 100000000000000000000"),
        train_set("seed=-1", expect="seed must be in [0, 2**31), got -1"),
        train_set("device=tpu", expect="device 'tpu'"),
        # -- overrides and flags --------------------------------------------------------------
        train_set("env.tasks=[1,", expect="override 'env.tasks=[1,': the value is not valid YAML"),
        train_set("train.lr", expect="override 'train.lr' must look like section.key=value"),
        train_set("=3", expect="override '=3' has an empty key"),
        ("two --set flags: the first counts", "train.py",
         [*state, "--set", "train.steps=ten", "--set", "train.lr=1e-3"], "train.steps: expected an integer"),
        ("--config and --resume", "train.py", [*state, "--resume", f["run"]], "exactly one of --config or --resume"),
        ("neither --config nor --resume", "train.py", [], "exactly one of --config or --resume"),
        ("unknown flag", "train.py", [*state, "--lr", "3"], "unrecognized arguments: --lr"),
        ("--stop-after 0", "train.py", [*state, "--stop-after", "0"], "--stop-after must be at least 1"),
        ("--run-dir is a file", "train.py", [*state, "--set", *tiny, "--run-dir", f["list.yaml"]],
         "list.yaml is a file, not a folder"),
        # -- missing models and data (all before any long work) -------------------------------
        train_set("text.model_name=/nonexistent/model", name="text model directory missing",
                  expect="text.model_name: directory /nonexistent/model does not exist"),
        train_set(f"text.model_name={f['not_a_model']}", name="text model directory broken",
                  expect=f"text.model_name: {f['not_a_model']} is not a loadable"),
        train_set("text.model_name=easyvla-tests/not-a-model", name="text model offline",
                  expect="text encoder 'easyvla-tests/not-a-model' is not a local directory"),
        train_set("data.path=/nonexistent/pusht.zarr", f"data.root={f['tmp']}/data", name="PushT data missing",
                  expect="the PushT data /nonexistent/pusht.zarr does not exist"),
        train_set(f"data.path={f['not_a_zip']}", f"data.root={f['tmp']}/data", name="PushT data not a zip",
                  expect="not_a_zip.zip is neither"),
        # -- resume ---------------------------------------------------------------------------
        ("resume a missing run", "train.py", ["--resume", f["tmp"] + "/no_run"], "no_run: no such run directory"),
        ("resume changes the model", "train.py", ["--resume", f["run"], "--set", "policy.d_model=64"],
         "--resume cannot change 'policy.d_model'"),
        ("resume changes the lr", "train.py", ["--resume", f["run"], "--set", "train.lr=1"],
         "--resume cannot change 'train.lr'"),
        ("resume a bad resumable value", "train.py", ["--resume", f["run"], "--set", "train.steps=0"],
         "train.steps must be >= 1"),
        ("resume truncated training state", "train.py", ["--resume", f["state_truncated"]],
         "training_state.pt is damaged"),
        ("resume without training state", "train.py", ["--resume", f["state_missing"]],
         "training_state.pt is missing"),
        ("resume truncated weights", "train.py", ["--resume", f["weights_truncated"]], "model.safetensors"),
        ("resume garbage config.json", "train.py", ["--resume", f["config_garbage"]], "config.json is damaged"),
        ("resume config.json without config", "train.py", ["--resume", f["config_wrong"]], "config.json"),
        ("resume a folder that is no run", "train.py", ["--resume", f["empty_runs"]],
         "no checkpoints folder in it; pass the run folder train.py wrote"),
        ("resume without config.json", "train.py", ["--resume", f["config_missing"]],
         "is not an EasyVLA checkpoint"),
        # -- evaluate.py ----------------------------------------------------------------------
        ("evaluate --episodes 0", "evaluate.py", ["--env", "pusht", "--checkpoint", f["run"], "--episodes", "0"],
         "argument --episodes: must be at least 1"),
        ("evaluate --episodes -3", "evaluate.py", ["--env", "pusht", "--episodes", "-3"], "argument --episodes"),
        ("evaluate --episodes abc", "evaluate.py", ["--env", "pusht", "--episodes", "abc"], "expected an integer"),
        ("evaluate --n-envs 0", "evaluate.py", ["--env", "pusht", "--n-envs", "0"], "argument --n-envs"),
        ("evaluate --videos -1", "evaluate.py", ["--env", "pusht", "--videos", "-1"], "argument --videos"),
        ("evaluate --seed -1", "evaluate.py", ["--env", "pusht", "--seed", "-1"], "argument --seed"),
        ("evaluate unknown env", "evaluate.py", ["--env", "atari"], "argument --env: invalid choice: 'atari'"),
        ("evaluate without --env", "evaluate.py", [], "--env"),
        ("evaluate PushT with Meta-World's protocol", "evaluate.py", ["--env", "pusht", "--protocol", "metaworld"],
         "--protocol metaworld is not a pusht protocol; use one of seeds"),
        ("evaluate unknown protocol", "evaluate.py", ["--env", "metaworld", "--protocol", "mt50"],
         "--protocol mt50 is not a metaworld protocol; use one of seeds, metaworld"),
        ("evaluate missing checkpoint", "evaluate.py", ["--env", "pusht", "--checkpoint", f["tmp"] + "/gone"],
         "no checkpoint at"),
        ("evaluate with no runs", "evaluate.py", ["--env", "pusht", "--runs-dir", f["empty_runs"]],
         "no pusht checkpoint under"),
        ("evaluate wrong env", "evaluate.py", ["--env", "metaworld", "--checkpoint", f["run"]],
         "is a pusht checkpoint, not metaworld"),
        ("evaluate --task on PushT", "evaluate.py", ["--env", "pusht", "--checkpoint", f["run"], "--task", "fly-v3"],
         "--task: env.tasks: ['fly-v3'] not among the pusht tasks"),
        ("evaluate bad device", "evaluate.py", ["--env", "pusht", "--checkpoint", f["run"], "--device", "tpu"],
         "device 'tpu'"),
        ("evaluate truncated weights", "evaluate.py", ["--env", "pusht", "--checkpoint", f["weights_truncated"]],
         "model.safetensors is damaged"),
        ("evaluate empty weights", "evaluate.py", ["--env", "pusht", "--checkpoint", f["weights_empty"]],
         "model.safetensors is damaged"),
        ("evaluate flipped byte", "evaluate.py", ["--env", "pusht", "--checkpoint", f["weights_flipped"]],
         "SHA-256 differs"),
        ("evaluate NaN weights", "evaluate.py", ["--env", "pusht", "--checkpoint", f["weights_nan"]],
         "holds NaN or inf"),
        ("evaluate garbage config.json", "evaluate.py", ["--env", "pusht", "--checkpoint", f["config_garbage"]],
         "config.json is damaged"),
        # -- ablate.py ------------------------------------------------------------------------
        ("ablate grid without values", "ablate.py", ["--config", PUSHT_STATE, "--grid", "seed", "--out", f["tmp"]],
         "seed"),
        ("ablate report of nothing", "ablate.py", ["--config", PUSHT_STATE, "--grid", "seed=0,1", "--out",
                                                   f["tmp"] + "/ablation", "--report-only"], "no finished cells"),
        ("ablate --out is a file", "ablate.py", ["--config", PUSHT_STATE, "--grid", "seed=0,1", "--out",
                                                 f["list.yaml"]], "list.yaml is a file, not a folder"),
        ("ablate missing config", "ablate.py", ["--config", f["tmp"] + "/nope.yaml", "--grid", "seed=0,1", "--out",
                                                f["tmp"] + "/ablation2"], "nope.yaml does not exist"),
    ]
    if torch.cuda.is_available():
        return rows
    return rows + [train_set("device=cuda", name="device=cuda without a GPU", expect="has no CUDA GPU")]


@pytest.fixture(scope="module")
def results(files, tmp_path_factory) -> dict[str, dict]:
    rows = cases(files)
    directory = tmp_path_factory.mktemp("cli_cases")
    (directory / "cases.json").write_text(json.dumps([{"name": n, "script": s, "args": a} for n, s, a, _ in rows]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, str(REPO / "tests" / "cli_runner.py"), str(directory / "cases.json"),
                    str(directory / "results.json")], cwd=REPO, env=env, check=True, timeout=600)
    return json.loads((directory / "results.json").read_text())


def assert_one_error_line(result: dict, expected: str) -> None:
    output = result["stdout"] + result["stderr"]
    assert "Traceback" not in output, output
    assert result["returncode"] != 0, output
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert expected in errors[0], errors[0]


def test_a_report_of_nothing_prints_only_its_error_line(results):
    """No progress bar over cells that --report-only does not run: stderr is the one error line."""
    assert results["ablate report of nothing"]["stderr"].count("\n") == 1


def test_there_are_at_least_sixty_cases(files):
    assert len(cases(files)) >= 60


def test_every_user_error_is_one_line(files, results):
    failures = []
    for name, _, _, expected in cases(files):
        try:
            assert_one_error_line(results[name], expected)
        except AssertionError as error:
            failures.append(f"{name}: {str(error).strip()[:400]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("script,args,expected", [
    ("train.py", ["--config", "configs/nope.yaml"], "configs/nope.yaml does not exist"),
    ("train.py", ["--config", "configs/pusht_state.yaml", "--set", "train.grad_clip=-1"], "train.grad_clip"),
    ("evaluate.py", ["--env", "pusht", "--episodes", "0"], "--episodes"),
])
def test_the_scripts_themselves_print_one_line(script, args, expected):
    result = subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert_one_error_line({"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr},
                          expected)
    assert result.returncode == 2


def test_a_bug_still_shows_its_traceback(tmp_path):
    script = tmp_path / "bug.py"
    script.write_text("from core.errors import run_main\n\ndef main():\n    raise ZeroDivisionError('a bug')\n\n"
                      "run_main(main)\n")
    result = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr
