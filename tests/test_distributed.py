"""Distributed training: the per-rank sampler, and two real CPU processes under torchrun (Gloo)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from train import StepBatchSampler

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def test_ranks_take_disjoint_slices_of_one_global_batch():
    single = list(StepBatchSampler(1000, 8, seed=3, start=5, stop=9, world_size=1))
    ranks = [list(StepBatchSampler(1000, 4, seed=3, start=5, stop=9, rank=r, world_size=2)) for r in (0, 1)]
    for step in range(4):
        # The two halves are exactly the batch of a single process at the effective batch size.
        assert ranks[0][step] + ranks[1][step] == single[step]
    assert ranks[0] != ranks[1]


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_two_cpu_processes_train_in_lockstep(tmp_path, tiny_text_model, micro_batches):
    from test_pusht import synthetic_arrays, write_zarr

    zarr_path = write_zarr(tmp_path / "pusht.zarr", synthetic_arrays(lengths=(6, 5, 7)))
    run = tmp_path / "run"
    overrides = [f"text.model_name={tiny_text_model}", f"data.root={tmp_path / 'data'}", f"data.path={zarr_path}",
                 "policy.d_model=32", "policy.chunk_size=4", "policy.n_action_steps=2", "fusion.n_heads=2",
                 "state.hidden=32", "action_head.down_dims=[16,32]", "train.steps=4", "train.batch_size=4",
                 "train.warmup_steps=1", "train.log_every=1", "eval.every=0", f"train.micro_batches={micro_batches}"]
    done = subprocess.run([*TORCHRUN, "train.py", "--config", "configs/pusht_state.yaml", "--run-dir", str(run),
                           "--no-final-eval", "--set", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    micro = " (in 2 micro-batches of 2)" if micro_batches == 2 else ""
    assert f"batch: 4 per process{micro} x 2 process(es) = 8 effective" in done.stdout
    # The replicas hold bit-identical weights after the run (checked across both processes).
    assert "max parameter difference from rank 0 = 0\n" in done.stdout
    weights = load_file(run / "checkpoints" / "latest" / "model.safetensors")
    assert all(v.isfinite().all() for v in weights.values())
    assert (run / "tb").is_dir()


def test_replica_check_catches_a_drifting_rank(tmp_path):
    script = tmp_path / "drift.py"
    script.write_text(textwrap.dedent("""
        import torch
        from core.device import resolve_device
        from core.distributed import init_distributed, replica_max_difference, shutdown

        info, _ = init_distributed(resolve_device("cpu"))
        layer = torch.nn.Linear(3, 2)
        with torch.no_grad():
            layer.weight.fill_(1.0 + 0.5 * info.rank)  # rank 1 drifts by 0.5
            layer.bias.zero_()
        print(f"rank {info.rank}: {replica_max_difference(layer, info)}")
        shutdown(info)
    """))
    done = subprocess.run([*TORCHRUN, str(script)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: 0.5" in done.stdout and "rank 1: 0.5" in done.stdout
