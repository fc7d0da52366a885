"""What the benchmarks compare a measured speed with: the network's FLOPs and the CPU's peak.

FLOPs are counted by torch.utils.flop_counter (convolutions and matrix products, 2 per multiply-add), so an
achieved GFLOP/s is the useful work per second, not what the hardware executed (padding, layout copies,
batch norm and activations are not counted).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.config import Precision
from models.precision import cpuinfo_field, resolve_device

#: The precisions every speed benchmark compares, side by side in one run.
COMPARED: tuple[Precision, Precision] = ("fp32", "bf16")
#: FLOPs per cycle per core. AVX-512 fp32: two 16-lane FMA units; AVX2 fp32: two 8-lane FMA units (e.g. AMD
#: Zen 3); AMX bf16: 1024 (Intel's figure for the tile unit of 4th and 5th generation Xeon); AVX-512 BF16 alone:
#: two 32-lane dot-product units. Without either bf16 unit, bf16 runs at the fp32 peak at best.
FLOPS_PER_CYCLE = {"fp32_avx512": 64, "fp32_avx2": 32, "bf16_amx": 1024, "bf16_avx512": 128}
#: The /proc/cpuinfo flags the peak depends on.
VECTOR_FLAGS = frozenset({"avx512f", "fma", "amx_bf16", "avx512_bf16"})


def network_flops(model: nn.Module, input_size: tuple[int, int], *, backward: bool) -> int:
    """FLOPs of one (1, 1, H, W) image through `model` (input_size = (W, H) pixels), forward only or forward
    and backward (the backward of a convolution costs its size once more for the weights' gradient and once more
    for its input's, except at the first layer, whose input needs none)."""
    w, h = input_size
    x = torch.rand(1, 1, h, w)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if backward:
            out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def cpu_ghz(cpuinfo: str = "/proc/cpuinfo") -> float | None:
    """The nominal clock of the first CPU in GHz (what /proc/cpuinfo reports; turbo may run higher)."""
    try:
        return float(cpuinfo_field("cpu MHz", cpuinfo)) / 1000
    except ValueError:
        return None


def cpu_peak_gflops(precision: str, cores: int, flags: frozenset[str], ghz: float | None = None) -> float | None:
    """Peak GFLOP/s of `cores` cores at `ghz` (default: the nominal clock) for fp32 (AVX-512 or AVX2 by `flags`,
    see ``cpu_vector_flags``) or bf16 (AMX where the CPU has it), or None where the clock is unknown."""
    ghz = ghz or cpu_ghz()
    if ghz is None:
        return None
    fp32 = "fp32_avx512" if "avx512f" in flags else "fp32_avx2"
    key = fp32
    if precision == "bf16":
        key = "bf16_amx" if "amx_bf16" in flags else "bf16_avx512" if "avx512_bf16" in flags else fp32
    return FLOPS_PER_CYCLE[key] * cores * ghz


def cpu_vector_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The ``VECTOR_FLAGS`` this CPU reports (empty where /proc/cpuinfo is missing)."""
    return frozenset(cpuinfo_field("flags", cpuinfo).split()) & VECTOR_FLAGS


def compute_kind(
    device: torch.device | str = "cpu", flags: frozenset[str] | None = None, vendor: str | None = None
) -> str:
    """A short name of what a training time depends on most: the GPU's name on CUDA, else the CPU's widest
    matrix unit ("amx", "avx512-bf16", "avx512", "avx2") and its core count, e.g. "cpu amx x2". A CPU not made by
    Intel is named by its maker ("cpu amd avx512-bf16 x2"): the same unit runs at different speeds on different
    cores, and the unnamed kinds of the earlier records are Intel's. `device` as the benchmarks name it ("auto",
    "cpu", "cuda:0"); `flags` and `vendor` default to this CPU's (``cpu_vector_flags``, ``cpu_vendor``)."""
    if resolve_device(str(device)).type == "cuda":
        return f"cuda {torch.cuda.get_device_name(0)}"
    flags = cpu_vector_flags() if flags is None else flags
    vendor = cpu_vendor() if vendor is None else vendor
    unit = next((name for flag, name in _UNITS if flag in flags), "other")
    maker = "" if vendor in ("intel", "") else f"{vendor} "
    return f"cpu {maker}{unit} x{os.cpu_count()}"


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's maker, lower case: "intel", "amd", another vendor_id as written, or "" where unknown."""
    vendor_id = cpuinfo_field("vendor_id", cpuinfo)
    return _VENDORS.get(vendor_id, vendor_id.lower())


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The first CPU's "model name" as /proc/cpuinfo writes it, or "" where unknown."""
    return cpuinfo_field("model name", cpuinfo)


#: /proc/cpuinfo's vendor_id -> the maker's short name.
_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
#: The flag that names a CPU's widest unit, widest first.
_UNITS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512-bf16"), ("avx512f", "avx512"), ("fma", "avx2"))
