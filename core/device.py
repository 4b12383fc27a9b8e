"""Device selection for ``device: auto``, and what the device computes natively (``precision: auto``)."""

import contextlib
import functools
import os
import shutil
from collections.abc import Callable

import torch

from core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; anything else must name a device this machine has."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"device '{name}' is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device '{name}': this machine has no CUDA GPU; use device=auto or cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"device '{name}': MPS is not available here; use device=auto or cpu")
        if device.type not in ("cpu", "cuda", "mps"):
            raise UserError(f"device '{name}' is not supported; use auto, cpu, cuda, cuda:N or mps")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


PRECISIONS = ("auto", "fp32", "bf16")
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo: AVX-512 BF16, AMX BF16


@functools.cache  # read once a process: autocast_for runs every training step
def _cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, instruction-set flags) from /proc/cpuinfo; ("", empty) where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as file:
            text = file.read()
    except OSError:
        return "", frozenset()
    lines = text.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return model, frozenset(flags)


def cpu_description() -> str:
    """CPU model and its matrix instruction sets, for logs and benchmark headers."""
    model, flags = _cpu_info()
    if not model:
        import platform

        return platform.processor() or "unknown CPU"
    isa = [name for flag, name in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX BF16"),
                                   ("amx_tile", "AMX tiles")) if flag in flags]
    return f"{model} ({', '.join(isa) or 'no AVX-512'})"


def device_name(device: torch.device) -> str:
    """What a run's speed was measured on: the GPU's name, or the CPU model and its matrix ISA."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware. A CPU without AVX-512 BF16 or AMX emulates it: bf16
    autocast then makes training many times slower than fp32 (17x on an AVX2 AMD EPYC, README); so do GPUs
    before compute capability 8 (Ampere)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(_cpu_info()[1] & _NATIVE_BF16_FLAGS)
    return False  # MPS and others: fp32, the safe choice


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where ``device`` computes it natively, else ``fp32``; the others as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def precision_note(precision: str, device: torch.device, fix: str = "set train.precision=auto or fp32") -> str:
    """One log line: the precision a run computes in, and why (``auto``), or a warning, ending in ``fix``,
    when bf16 is emulated."""
    resolved = resolve_precision(precision, device)
    where = cpu_description() if device.type == "cpu" else device.type
    if precision == "auto":
        return f"precision: {resolved} (auto: {where} {'has' if resolved == 'bf16' else 'has no'} native bf16)"
    if resolved == "bf16" and not native_bf16(device):
        return f"warning: precision bf16 on {where}, which emulates bf16: expect it many times slower than fp32; {fix}"
    return f"precision: {resolved}"


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a training (or benchmark) step: bf16 autocast, or none for fp32."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_compile_supported(device: torch.device) -> None:
    """``torch.compile`` builds its CPU kernels with a C++ compiler: without one, say so in one line
    before the first re-plan fails deep inside the compiler stack."""
    compilers = (os.environ.get("CXX"), "g++", "clang++", "c++")
    if device.type == "cpu" and not any(shutil.which(c) for c in compilers if c):
        raise UserError("compiling for a CPU needs a C++ compiler (g++ or clang++, or CXX set to one), "
                        "which torch.compile builds its kernels with; install one, or run without --compile")


def compile_frozen(fn: Callable) -> Callable:
    """``torch.compile(fn)`` for inference with inductor's freezing: without gradients, the weights ``fn``
    reads become constants of its graph (folded, and pre-packed into the layouts oneDNN's convolutions
    want). Dynamo reads the setting while it traces, at the first call and at every recompile, so it is
    on around every call (``torch.compile(fn, options={"freezing": True})`` only reaches the compiler
    and measured no gain). Weights changed after the first call are not seen: compile after loading.
    With gradients on (training), ``fn`` runs eager: nothing is compiled or frozen for a backward pass."""
    # Imported on demand, as torch.compile does.
    from torch._inductor import config as inductor_config

    compiled = torch.compile(fn)

    @functools.wraps(fn)
    def run(*args):
        if torch.is_grad_enabled():
            return fn(*args)
        with inductor_config.patch(freezing=True):
            return compiled(*args)

    return run
