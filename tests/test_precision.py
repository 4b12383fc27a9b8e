"""precision: auto picks bf16 only where the device computes it natively; bf16 elsewhere is warned about."""

import pytest
import torch

from core import device as dev
from core.device import autocast_for, native_bf16, precision_note, resolve_precision

AVX2 = ("AMD EPYC 7B13", {"fpu", "sse2", "avx", "avx2", "fma"})
AVX512_BF16 = ("AMD EPYC 9B14", {"avx2", "avx512f", "avx512_bf16"})
AMX = ("Intel Xeon Platinum 8481C", {"avx2", "avx512f", "amx_tile", "amx_bf16"})
CPU = torch.device("cpu")


@pytest.mark.parametrize(("cpu", "native"), [(AVX2, False), (AVX512_BF16, True), (AMX, True), (("", set()), False)])
def test_auto_is_bf16_only_on_cpus_with_native_bf16(monkeypatch, cpu, native):
    monkeypatch.setattr(dev, "_cpu_info", lambda: cpu)
    assert native_bf16(CPU) is native
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    for explicit in ("fp32", "bf16"):  # an explicit choice is kept, whatever the hardware
        assert resolve_precision(explicit, CPU) == explicit


def test_autocast_follows_the_resolved_precision(monkeypatch):
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    monkeypatch.setattr(dev, "_cpu_info", lambda: AVX2)
    with autocast_for("auto", CPU):
        assert (a @ b).dtype == torch.float32
    with autocast_for("bf16", CPU):
        assert (a @ b).dtype == torch.bfloat16
    monkeypatch.setattr(dev, "_cpu_info", lambda: AMX)
    with autocast_for("auto", CPU):
        assert (a @ b).dtype == torch.bfloat16
    with autocast_for("fp32", CPU):
        assert (a @ b).dtype == torch.float32


def test_the_log_line_says_why_and_warns_about_emulated_bf16(monkeypatch):
    monkeypatch.setattr(dev, "_cpu_info", lambda: AVX2)
    assert precision_note("auto", CPU) == "precision: fp32 (auto: AMD EPYC 7B13 (no AVX-512) has no native bf16)"
    warning = precision_note("bf16", CPU)
    assert warning.startswith("warning: precision bf16 on AMD EPYC 7B13") and "train.precision=auto" in warning
    assert precision_note("fp32", CPU) == "precision: fp32"
    monkeypatch.setattr(dev, "_cpu_info", lambda: AMX)
    assert precision_note("auto", CPU).startswith("precision: bf16 (auto: Intel Xeon Platinum 8481C (AVX-512, AMX")
    assert precision_note("bf16", CPU) == "precision: bf16"


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16' is not one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)
