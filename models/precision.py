"""Numeric precision of the network's forward and backward passes, and the CPU threads torch computes with.

One setting for training and inference (TrainConfig.precision, Predictor's `precision`, the service's
KAMP_PRECISION): "bf16" runs the network under bfloat16 autocast in channels_last memory layout, "fp32" in
float32 (channels_last on CPUs without AVX-512, the plain layout elsewhere: `memory_format`), "auto" picks bf16
on CUDA and on CPUs with AMX or AVX-512 BF16 instructions (where oneDNN has native bf16 convolutions) and fp32
elsewhere. Only the network runs in bf16: losses, the distillation softmaxes, heatmap decoding and metrics read
its outputs cast back to float32 (docs/method.md, "Precision").
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import nn

from .config import Precision, check_precision

Resolved = Literal["bf16", "fp32"]
M = TypeVar("M", bound=nn.Module)

#: /proc/cpuinfo flags of the x86 instructions that give oneDNN native bfloat16 matrix kernels.
_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The bf16 instruction flags this CPU reports (empty where /proc/cpuinfo is missing, e.g. not Linux)."""
    return frozenset(cpuinfo_field("flags", cpuinfo).split()) & _BF16_FLAGS


@functools.cache
def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU reports AVX-512 (`avx512f`); False where /proc/cpuinfo is missing."""
    return "avx512f" in cpuinfo_field("flags", cpuinfo).split()


def cpuinfo_field(key: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """The value of the first CPU's `key` line in /proc/cpuinfo ("flags", "vendor_id", "model name"), stripped;
    "" where the file or the line is missing."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ""
    line = next((line for line in text.splitlines() if line.startswith(key)), ":")
    return line.split(":", 1)[1].strip()


def resolve_precision(precision: Precision | str, device: torch.device | str) -> Resolved:
    """The precision `precision` stands for on `device`: "bf16" or "fp32". Raises ValueError on an unknown name."""
    check_precision(precision)
    if precision != "auto":
        return precision  # type: ignore[return-value]
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        return "bf16" if cpu_bf16_flags() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: Resolved) -> contextlib.AbstractContextManager[object]:
    """The autocast context of a resolved precision on `device` (a disabled one for fp32)."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(precision: Resolved, device: torch.device | str = "cpu") -> torch.memory_format:
    """The layout the network's weights and inputs take on `device`: channels_last for bf16 (oneDNN's and cuDNN's
    fast bf16 convolutions read NHWC) and for fp32 on a CPU without AVX-512 (where oneDNN's fp32 convolutions
    read it faster, measured in bench/layout_speed.py); the plain layout for fp32 elsewhere (on the AVX-512
    machines measured, channels_last made fp32 training slower; CUDA's fp32 is not measured)."""
    if precision == "bf16" or (torch.device(device).type == "cpu" and not cpu_has_avx512()):
        return torch.channels_last
    return torch.contiguous_format


def _device_of(module: nn.Module) -> torch.device:
    """Where `module`'s first parameter lies (the CPU for a module without parameters)."""
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def prepare_module(module: M, precision: Resolved) -> M:
    """`module` with its 4-D weights in the precision's memory layout on the device they lie on (in place;
    parameters stay float32)."""
    fmt = memory_format(precision, _device_of(module))
    module.to(memory_format=fmt)  # type: ignore[call-overload]  # (missing from torch's stubs)
    return module


def prepare_frozen(module: M, precision: Resolved) -> M:
    """A model that no longer trains (a Predictor's, a teacher) in the precision's layout and, for bf16, with its
    weights stored in bf16 (in place). Autocast casts a weight on every call unless it trains; cast once, the
    convolutions compute what they computed under autocast (autocast gave them the same bf16 weights) without
    re-casting hundreds of weights per forward pass."""
    prepare_module(module, precision)
    if precision == "bf16":
        module.to(torch.bfloat16)
    return module


def prepare_input(x: torch.Tensor, precision: Resolved) -> torch.Tensor:
    """A (B, C, H, W) input in the precision's memory layout on its device (same values, float32)."""
    return x.contiguous(memory_format=memory_format(precision, x.device))


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, or os.cpu_count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """OMP_NUM_THREADS where it is set to a count, else every core this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else available_cores()


def set_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count from the calling thread: `threads`, or default_threads().

    OpenMP keeps the count per calling thread (torch passes its latest value on to threads that start computing
    later), so a dedicated inference thread calls this from itself. Returns the count set."""
    n = threads if threads is not None else default_threads()
    if n < 1:
        raise ValueError(f"torch needs at least one thread, got {n}")
    torch.set_num_threads(n)
    return n


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
