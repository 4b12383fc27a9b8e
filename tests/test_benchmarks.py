"""The memory report: it measures what it claims, and the shipped configs fit the 1 GiB promise."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from benchmarks.live_memory import LiveStorageTracker
from benchmarks.memory import BUDGET_BYTES, measure
from experiment.config import load_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


def test_tracker_counts_live_storages_and_their_release():
    tracker = LiveStorageTracker()
    with tracker:
        a = torch.ones(1024, 1024)  # 4 MiB
        b = a * 2  # 4 MiB more
        del a
        c = b + 1  # a is gone: the live total stays at 8 MiB
    assert tracker.peak == 8 * 2**20
    assert tracker.current == 8 * 2**20
    del b, c
    assert tracker.current == 0


def test_tracker_sees_autograd_saved_tensors():
    weight = torch.randn(512, 512, requires_grad=True)
    tracker = LiveStorageTracker()
    tracker.track_all(weight)
    with tracker:
        loss = torch.tanh(weight @ weight).sum()  # the tanh output is saved for backward
    assert tracker.current >= 2 * weight.numel() * 4
    del loss
    assert tracker.current == weight.numel() * 4


MODULAR = [p for p in CONFIGS if load_config(p).backbone.type == "modular"]  # the VLM needs its hub weights


@pytest.mark.parametrize("path", MODULAR, ids=[p.name for p in MODULAR])
def test_default_configs_train_under_one_gib(path, tiny_text_model):
    # The language model stays on the CPU outside the training step, so its size does not
    # enter this peak; the tiny one stands in for DistilBERT here.
    config = load_config(path, [f"text.model_name={tiny_text_model}", "device=cpu"])
    report = measure(config)
    assert report.trainable_params > 1_000_000
    assert report.resident_bytes > 4 * 4 * report.trainable_params * 0.9  # params, grads, 2 AdamW moments
    assert report.peak_bytes > report.resident_bytes
    assert report.peak_bytes < BUDGET_BYTES, f"{path.name}: {report.peak_bytes / 2**20:.0f} MiB"
    assert report.language_model_bytes == 4 * report.frozen_params  # the frozen text model, fp32, reported apart


def test_micro_batches_cut_the_activation_peak(tiny_text_model):
    """A batch of 16 in 4 micro-batches peaks like a batch of 4, well under the batch of 16 in one pass."""
    path = Path(__file__).resolve().parents[1] / "configs" / "pusht.yaml"

    def above_resident(batch_size: int, micro_batches: int) -> int:  # activations and temporaries
        config = load_config(path, [f"text.model_name={tiny_text_model}", "device=cpu",
                                    f"train.batch_size={batch_size}", f"train.micro_batches={micro_batches}"])
        report = measure(config)
        return report.peak_bytes - report.resident_bytes

    whole, split, small = above_resident(16, 1), above_resident(16, 4), above_resident(4, 1)
    assert abs(split - small) < 0.1 * small
    assert split < 0.6 * whole  # the rest of the step (optimizer temporaries) does not shrink


def test_flop_count_is_per_sample_and_covers_the_model(tiny_text_model):
    from benchmarks.throughput import build, flops_per_sample

    per_sample = []
    for batch_size in (2, 4):
        config = small_config(tiny_text_model, "diffusion", [f"train.batch_size={batch_size}"])
        policy, _, batch = build(config)
        per_sample.append(flops_per_sample(policy, batch, "fp32"))
    assert per_sample[0] == pytest.approx(per_sample[1], rel=0.02)
    # Forward and backward touch every weight at least twice per sample (multiply and add).
    assert per_sample[0] > 4 * policy.parameter_counts()["trainable"]


def test_matmul_peak_is_a_plausible_rate():
    from benchmarks.throughput import matmul_peak

    peak = matmul_peak("fp32", repeats=2, shapes=((256, 256, 256),))
    assert 1e8 < peak < 1e13  # 0.1 GFLOP/s .. 10 TFLOP/s on any CPU this runs on


def test_kernel_report_times_each_layer_with_its_training_input(tiny_text_model):
    """benchmarks.kernels records each convolution and linear call of a training forward and times the
    layer on an input of the recorded shape: the stem convolution's FLOPs are the analytic count."""
    from benchmarks.kernels import kernel_report, record_calls, time_layer
    from benchmarks.throughput import build

    config = small_config(tiny_text_model, "diffusion", ["train.batch_size=2"])
    policy, _, batch = build(config)
    calls = record_calls(policy, batch, "fp32")
    modules = {name for name, m in policy.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d,
                                                                              torch.nn.Linear))}
    called = {call.name for call in calls}
    assert "vision.trunk.0" in called and "head.denoiser.final.1" in called
    assert called <= modules
    stem = next(call for call in calls if call.name == "vision.trunk.0")
    n_images = 2 * config.policy.n_obs_steps * len(config.features.cameras)
    assert stem.shape == (n_images, 3, 32, 32) and not stem.input_grad  # images take no gradient
    timing = time_layer(stem, 1, "fp32", repeats=1)
    assert timing.forward_flops == 2 * n_images * 64 * 16 * 16 * 3 * 7 * 7  # stride 2: 16x16 outputs
    assert timing.train_flops == 2 * timing.forward_flops  # + the weights' gradient only
    inner = next(call for call in calls if call.name == "vision.trunk.4.0.conv1")
    assert inner.input_grad and time_layer(inner, 1, "fp32", repeats=1).train_flops == 3 * (
        2 * n_images * 64 * 8 * 8 * 64 * 3 * 3)  # forward, the input's and the weights' gradients
    assert timing.forward_s > 0 and timing.train_s > timing.forward_s / 2
    report = kernel_report(config, top=3, repeats=1)
    assert report.count("| ") >= 3 + 2 and "of the measured step" in report


def _run_folder(path: Path, env: str, scalars: dict[str, list[tuple[int, float]]], final: dict | None = None
                ) -> Path:
    """A run folder as train.py leaves it, for the learning-curve tests: config.yaml, a TensorBoard log of
    ``scalars`` (tag -> [(step, value)]) and, if given, eval_results.json."""
    import json

    import yaml
    from torch.utils.tensorboard import SummaryWriter

    (path / "tb").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"env": {"name": env}, "train": {"batch_size": 64}}))
    if scalars:
        writer = SummaryWriter(path / "tb")
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        writer.close()
    if final is not None:
        (path / "eval_results.json").write_text(json.dumps(final))
    return path


def test_learning_curve_reads_samples_and_training_minutes(tmp_path):
    from evaluation.learning_curve import learning_curve, plot_runs, training_minutes

    points = [(100, 0.3, 1.5), (200, 0.6, 3.0), (300, 0.8, 4.5)]
    run = _run_folder(tmp_path / "run", "pusht",
                      {"val/score": [(step, score) for step, score, _ in points],
                       "val/success_rate": [(step, score / 4) for step, score, _ in points],
                       "train/minutes": [(step, minutes) for step, _, minutes in points]},
                      {"overall": {"mean_max_reward": 0.82, "success_rate": 0.2},
                       "training": {"steps": 300, "seconds": 280, "checkpoint_step": 200}})
    assert [(s, v) for s, _, v in learning_curve(run, "val/score")] == [(100, pytest.approx(0.3)),
                                                                         (200, pytest.approx(0.6)),
                                                                         (300, pytest.approx(0.8))]
    assert training_minutes(run) == {100: pytest.approx(1.5), 200: pytest.approx(3.0), 300: pytest.approx(4.5)}
    fig = plot_runs([run], tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    assert len(fig.axes) == 4  # PushT: score and success, against samples and minutes


def test_learning_curve_plot_of_a_success_only_run_has_no_empty_row(tmp_path):
    """A Meta-World run logs success only: one row of axes, and its star names the seeds it was evaluated on."""
    from evaluation.learning_curve import plot_runs

    episodes = [{"seed": 2_000_000 + i, "success": True, "steps": 40} for i in range(3)]
    run = _run_folder(tmp_path / "reach", "metaworld", {"val/success_rate": [(1000, 0.8), (2000, 0.9)]},
                      {"tasks": {"reach-v3": {"episodes_detail": episodes}}, "overall": {"success_rate": 1.0},
                       "training": {"steps": 2000, "seconds": 600, "checkpoint_step": 2000}})
    fig = plot_runs([run], tmp_path / "curve.png")
    assert len(fig.axes) == 2
    assert all(ax.lines for ax in fig.axes)  # no empty axes
    labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert "reach (eval seeds 2,000,000.., that checkpoint)" in labels


def test_learning_curve_plot_without_a_validation_curve_is_refused(tmp_path):
    from core.errors import MissingResourceError
    from evaluation.learning_curve import plot_runs

    run = _run_folder(tmp_path / "run", "metaworld", {})
    with pytest.raises(MissingResourceError, match="no run has a validation curve"):
        plot_runs([run], tmp_path / "curve.png")
    assert not (tmp_path / "curve.png").exists()


@pytest.mark.parametrize("case,expected", [
    ("missing", "does not exist or is not a folder"),
    ("checkpoint", "is not a run folder (no config.yaml)"),
    ("config_list", "is not a config train.py wrote"),
    ("config_syntax", "is not a config train.py wrote"),
    ("no_such_tag", "no 'val/success_rate' in the TensorBoard log; its validation tags: val/score"),
    ("no_curve", "none (eval.every=0 logs no validation curve)"),
])
def test_learning_curve_refuses_what_is_not_a_run_in_one_line(tmp_path, monkeypatch, capsys, case, expected):
    from core.errors import EXIT_USER_ERROR, run_main
    from evaluation import learning_curve

    run = tmp_path / "run"
    if case == "checkpoint":
        (run / "checkpoints" / "best").mkdir(parents=True)
        run = run / "checkpoints" / "best"
    elif case in ("config_list", "config_syntax"):
        _run_folder(run, "metaworld", {"val/success_rate": [(100, 0.5)]})
        (run / "config.yaml").write_text("- a\n" if case == "config_list" else "train: [1,\n")
    elif case in ("no_such_tag", "no_curve"):
        _run_folder(run, "pusht", {"val/score": [(100, 0.5)]} if case == "no_such_tag" else {"train/loss": [(1, 1.0)]})
    monkeypatch.setattr("sys.argv", ["learning_curve", str(run)])
    with pytest.raises(SystemExit) as exit_:
        run_main(learning_curve.main)
    assert exit_.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err


def test_gpu_check_runs_on_the_cpu_as_a_smoke_run(tiny_text_model):
    """The GPU check's measurement loop, on the CPU (no memory numbers there): every field is filled."""
    from benchmarks.gpu_check import check

    config = str(Path(__file__).resolve().parents[1] / "configs" / "pusht.yaml")
    row = check(config, "flow", [f"text.model_name={tiny_text_model}", "action_head.type=flow"], torch.device("cpu"),
                steps=2)
    assert row["batch"] == 64 and row["samples_per_s"] > 0 and row["fits"] == "-"
    assert 0 < row["plan_p50"] <= row["plan_p95"] and row["period_ms"] == 100.0
    assert np.isnan(row["compiled_p50"])  # not asked for


def test_gpu_check_times_the_compiled_replan_when_asked(tiny_text_model, monkeypatch):
    """--compile: every modular head's re-plan is timed again after compile_for_inference (the capture replayed
    eagerly here: inductor's build takes minutes on 2 cores)."""
    import functools

    from benchmarks.gpu_check import check

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    config = str(Path(__file__).resolve().parents[1] / "configs" / "pusht.yaml")
    overrides = [f"text.model_name={tiny_text_model}", "action_head.down_dims=[16,32]"]
    row = check(config, "flow", [*overrides, "action_head.type=flow"], torch.device("cpu"), steps=2, plans=3,
                compile=True)
    assert 0 < row["compiled_p50"] <= row["compiled_p95"]
    row = check(config, "regression", [f"text.model_name={tiny_text_model}", "action_head.type=regression"],
                torch.device("cpu"), steps=2, plans=3, compile=True)
    assert 0 < row["compiled_p50"] <= row["compiled_p95"]


def test_gpu_check_measures_the_vlm_backbone_settings(tiny_vlm):
    """--vlm DIR: each VLM setting (full, LoRA + frozen vision, + checkpointing) trains and re-plans."""
    from benchmarks.gpu_check import VLM_CONFIG, VLM_SETTINGS, check

    config = str(Path(__file__).resolve().parents[1] / VLM_CONFIG)
    for label, extra in VLM_SETTINGS.items():
        row = check(config, label, [f"vlm.model_name={tiny_vlm}", *extra], torch.device("cpu"), steps=2, plans=3)
        assert row["head"] == label and row["batch"] == 16 and row["samples_per_s"] > 0
        assert 0 < row["plan_p50"] <= row["plan_p95"]


def test_levers_benchmark_times_each_lever_against_eager(tiny_text_model, monkeypatch, capsys):
    """A smoke run (no timing asserted): every lever asked for gets its row and a ratio."""
    import sys

    from benchmarks import levers

    config = str(Path(__file__).resolve().parents[1] / "configs" / "pusht_state.yaml")
    monkeypatch.setattr(sys, "argv", ["levers", "--config", config, "--set", f"text.model_name={tiny_text_model}",
                                      "train.batch_size=4", "--levers", "no_fusion_dropout", "--rounds", "1",
                                      "--steps", "1"])
    levers.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "x |" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["eager", "no_fusion_dropout"]
    assert rows[0].rstrip().endswith("| 1.00x |")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_latency_benchmark_times_the_inference_precision_evaluate_uses(tiny_text_model, precision, monkeypatch):
    from benchmarks import latency
    from policy.base import Policy

    used = []
    original = Policy.for_inference
    monkeypatch.setattr(Policy, "for_inference", lambda self, p="fp32": used.append(p) or original(self, p))
    table = latency.latency_table(str(CONFIGS[0].parent / "metaworld_reach.yaml"),
                                  [f"text.model_name={tiny_text_model}"], ["regression"], calls=4,
                                  precision=precision)
    assert "| regression |" in table and used == [precision]


@pytest.mark.parametrize("whole_chunk", [False, True])
def test_latency_times_the_replan_select_action_runs(tiny_text_model, whole_chunk, monkeypatch):
    """A re-plan is timed for the n_action_steps select_action executes, or for the whole chunk."""
    from benchmarks import latency
    from policy.vla_policy import VLAPolicy

    asked = set()
    original = VLAPolicy.predict_action_chunk
    monkeypatch.setattr(VLAPolicy, "predict_action_chunk",
                        lambda self, obs, generator=None, steps=None: asked.add(steps) or original(self, obs, generator, steps))
    path = str(CONFIGS[0].parent / "metaworld_reach.yaml")
    latency.latency_table(path, [f"text.model_name={tiny_text_model}"], ["autoregressive"], calls=4,
                          whole_chunk=whole_chunk)
    n_action_steps = load_config(path, [f"text.model_name={tiny_text_model}"]).policy.n_action_steps
    assert asked == ({None, n_action_steps} if whole_chunk else {n_action_steps})  # select_action: the prefix


def test_denoising_steps_table_times_each_step_count(tiny_text_model, monkeypatch):
    from benchmarks import latency

    timed, denoisers = [], []

    def fake_measure(config, features, calls, precision="fp32", whole_chunk=False):
        timed.append((config.action_head.type, config.action_head.num_inference_steps, precision))
        denoisers.append(config.action_head.denoiser)
        return {"plan_p50": 1.0, "plan_p95": 2.0}

    monkeypatch.setattr(latency, "measure_head", fake_measure)
    table = latency.steps_table(str(CONFIGS[0].parent / "metaworld_reach.yaml"), [f"text.model_name={tiny_text_model}"],
                                ["diffusion", "flow"], [1, 4], calls=4, precision="bf16")
    assert timed == [("diffusion", 1, "bf16"), ("diffusion", 4, "bf16"), ("flow", 1, "bf16"), ("flow", 4, "bf16")]
    assert table.splitlines()[0] == "| head | 1 steps | 4 steps |"
    assert "| flow | 1.0 / 2.0 | 1.0 / 2.0 |" in table

    timed.clear()
    table = latency.steps_table(str(CONFIGS[0].parent / "metaworld_reach.yaml"), [f"text.model_name={tiny_text_model}"],
                                ["flow"], [2], calls=4, denoisers=("unet", "resmlp"))
    assert timed == [("flow", 2, "fp32"), ("flow", 2, "fp32")] and denoisers[-2:] == ["unet", "resmlp"]
    assert "| flow, unet | 1.0 / 2.0 |" in table and "| flow, resmlp | 1.0 / 2.0 |" in table


def test_goal_visibility_sees_the_marker_larger_than_the_stock_goal():
    pytest.importorskip("metaworld")
    from benchmarks.goal_visibility import measure, table

    stock = measure("reach-v3", 48, episodes=1, marker=False, near=0.1, every=10, steps=40)
    marked = measure("reach-v3", 48, episodes=1, marker=True, near=0.1, every=10, steps=40)
    assert set(stock) == {"corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV"}
    frames = [len(v["far"]) + len(v["near"]) for v in stock.values()]
    assert frames == [4] * len(stock)  # steps 0, 10, 20, 30 of one episode, every camera
    for camera in ("corner", "topview"):
        stock_px = stock[camera]["far"] + stock[camera]["near"]
        marked_px = marked[camera]["far"] + marked[camera]["near"]
        assert sum(marked_px) > sum(stock_px) > 0
    text = table(stock)
    assert text.count("\n") == 1 + len(stock) and "| gripperPOV |" in text


def test_report_header_names_no_local_path(tmp_path):
    """The committed report's header must not carry this machine's absolute paths."""
    from benchmarks.__main__ import describe_override
    model = tmp_path / "some_package" / "model"
    model.mkdir(parents=True)
    described = describe_override(f"text.model_name={model}")
    assert described == "text.model_name=<local>/some_package/model"
    assert str(tmp_path) not in described
    assert describe_override("text.model_name=distilbert-base-uncased") == "text.model_name=distilbert-base-uncased"
    assert describe_override("train.steps=10") == "train.steps=10"


def test_fast_path_table_alternates_plain_and_fast_replans(tiny_text_model, monkeypatch):
    """Both rows time the same policy; the plain row's re-plans run inside plain_inference()."""
    from action_head import denoisers
    from benchmarks import latency
    from policy.vla_policy import VLAPolicy

    modes = []
    original = VLAPolicy.predict_action_chunk
    monkeypatch.setattr(VLAPolicy, "predict_action_chunk",
                        lambda self, *a, **k: modes.append(denoisers._plain) or original(self, *a, **k))
    path = str(CONFIGS[0].parent / "metaworld_reach.yaml")
    table = latency.fast_path_table(path, [f"text.model_name={tiny_text_model}"], ["flow"], calls=4, rounds=2)
    assert "| flow |" in table
    assert modes == [True, True, True, False, False, False] * 2  # per round: warm-up + 2 timed, each mode
    assert not denoisers._plain
    mlp = latency.fast_path_table(path, [f"text.model_name={tiny_text_model}", "action_head.denoiser=mlp"],
                                  ["flow"], calls=4, rounds=2)
    assert "| flow |" not in mlp  # no U-Net, no fast path to compare


def test_compile_table_times_eager_and_compiled_replans_of_the_same_weights(tiny_text_model, monkeypatch):
    """One row per head: the compiled policy's chunk is the eager one's (the capture replayed eagerly here),
    so the table's largest action difference is rounding."""
    import functools

    from benchmarks import latency

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    path = str(CONFIGS[0].parent / "metaworld_reach.yaml")
    for head, extra in (("flow", ["action_head.down_dims=[16,32]"]), ("regression", [])):
        table = latency.compile_table(path, [f"text.model_name={tiny_text_model}", *extra], [head], calls=4, rounds=2)
        row = next(line for line in table.splitlines() if line.startswith(f"| {head} |"))
        assert float(row.strip("| ").split("|")[-1]) < 1e-5


@pytest.mark.parametrize("native", [False, True])
def test_benchmarks_skip_bf16_where_the_cpu_emulates_it(monkeypatch, capsys, native):
    """An emulated bf16 step takes many times an fp32 one: ``python -m benchmarks`` measures fp32 only there."""
    import sys

    from benchmarks import __main__ as bench
    from benchmarks import kernels, latency, memory, scaling, throughput

    asked = []
    monkeypatch.setattr(kernels, "kernel_report", lambda config, top, repeats:
                        asked.append(("kernels", config.train.precision)) or "table")
    monkeypatch.setattr(bench, "native_bf16", lambda device: native)
    monkeypatch.setattr(throughput, "throughput_table", lambda path, sets, heads, precisions, steps:
                        asked.append(("train", *precisions)) or "table")
    monkeypatch.setattr(throughput, "profile_step", lambda config: asked.append(("profile", config.train.precision))
                        or "profile")
    monkeypatch.setattr(latency, "latency_table", lambda path, sets, heads, calls, precision:
                        asked.append(("select_action", precision)) or "table")
    monkeypatch.setattr(latency, "steps_table", lambda path, sets, heads, steps, calls, precision, denoisers=():
                        asked.append(("replan", precision)) or "table")
    monkeypatch.setattr(latency, "fast_path_table", lambda *args: "table")
    monkeypatch.setattr(latency, "compile_table", lambda *args: "table")
    monkeypatch.setattr(memory, "memory_table", lambda *args: "table")
    monkeypatch.setattr(scaling, "scaling_table", lambda *args: "table")
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--quick"])
    bench.main()
    precisions = {precision for _, *ps in asked for precision in ps}
    assert precisions == ({"fp32", "bf16"} if native else {"fp32"})
    assert ("profile", "bf16" if native else "fp32") in asked
    assert ("kernels", "bf16" if native else "fp32") in asked
    assert ("This CPU emulates bf16" in capsys.readouterr().out) is not native


def test_denoiser_probe_fits_fixed_contexts_and_measures_held_out_samples(tiny_text_model):
    """The probe trains a fresh head on frozen contexts: trained, its sampled chunks are far closer to
    held-out targets than untrained; one table row per denoiser."""
    from benchmarks import denoiser_probe as dp

    config = load_config(CONFIGS[0].parent / "metaworld_reach.yaml",
                         [f"text.model_name={tiny_text_model}", "action_head.type=flow", "train.batch_size=32",
                          "train.warmup_steps=10", "train.lr=3e-3", "policy.d_model=32", "policy.chunk_size=8"])
    g = torch.Generator().manual_seed(0)
    n, d, h, a = 160, config.policy.d_model, config.policy.chunk_size, 4
    query = torch.randn(n, 1, d, generator=g)
    targets = torch.tanh(query.flatten(1) @ torch.randn(d, h * a, generator=g) / d ** 0.5).reshape(n, h, a)
    encoded = dp.Encoded(query, torch.randn(n, 3, d, generator=g), torch.zeros(n, 3, dtype=torch.bool),
                         targets, torch.zeros(n, h, dtype=torch.bool))
    head_config = config.action_head.__class__(denoiser="resmlp", resmlp_width=64)
    untrained = dp.probe(encoded, head_config, config, 0, d, 1, executed=4)
    trained = dp.probe(encoded, head_config, config, 300, d, 1, executed=4)
    assert trained["sample_mse"] < 0.5 * untrained["sample_mse"]
    assert trained["held_out_loss"] < untrained["held_out_loss"]
    assert trained["params"] == untrained["params"] > 0 and trained["step_ms"] > 0
    table = dp.probe_table(encoded, config, ["mlp", "resmlp"], steps=2)
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["mlp", "resmlp"]

