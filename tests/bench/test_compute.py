"""bench.compute and bench.gpu_check: FLOP counts and peaks with known answers, and the GPU check off a GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from bench import gpu_check
from bench.compute import (
    compute_kind,
    cpu_ghz,
    cpu_model,
    cpu_peak_gflops,
    cpu_vector_flags,
    cpu_vendor,
    network_flops,
)


def test_flops_of_one_convolution_forward_and_backward() -> None:
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    forward = 2 * 4 * 9 * (8 * 6)  # 2 FLOPs per multiply-add, 4 outputs x 9 taps at each of 8 x 6 pixels
    assert network_flops(conv, (6, 8), backward=False) == forward
    # Backward: the weights' gradient only (the image needs none), the same size again.
    assert network_flops(conv, (6, 8), backward=True) == 2 * forward


def test_cpu_peaks_at_a_known_clock(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2100.000\n")
    assert cpu_ghz(str(info)) == pytest.approx(2.1)
    assert cpu_ghz(str(tmp_path / "missing")) is None
    amx = frozenset({"avx512f", "fma", "amx_bf16", "avx512_bf16"})
    assert cpu_peak_gflops("fp32", 2, amx, ghz=2.1) == pytest.approx(2 * 64 * 2.1)
    assert cpu_peak_gflops("fp32", 2, frozenset({"fma"}), ghz=2.45) == pytest.approx(2 * 32 * 2.45)
    assert cpu_peak_gflops("bf16", 2, frozenset({"fma"}), ghz=2.45) == pytest.approx(2 * 32 * 2.45)
    assert cpu_peak_gflops("bf16", 2, amx, ghz=2.1) == pytest.approx(2 * 1024 * 2.1)
    assert cpu_peak_gflops("bf16", 2, frozenset({"avx512_bf16"}), ghz=2.1) == pytest.approx(2 * 128 * 2.1)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f amx_bf16\n")
    assert cpu_vector_flags(str(info)) == {"fma", "avx512f", "amx_bf16"}


def test_gpu_check_says_so_without_cuda(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "g.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()
    assert gpu_check.bf16_peak("NVIDIA H200", None) == 989.0 and gpu_check.bf16_peak("Unknown", None) is None


def test_compute_kind_names_the_widest_unit() -> None:
    cores = os.cpu_count()
    intel = {"vendor": "intel"}
    assert compute_kind("cpu", frozenset({"fma", "avx512f", "avx512_bf16", "amx_bf16"}), **intel) == f"cpu amx x{cores}"
    assert compute_kind("cpu", frozenset({"fma", "avx512f", "avx512_bf16"}), **intel) == f"cpu avx512-bf16 x{cores}"
    assert compute_kind("cpu", frozenset({"fma", "avx512f"}), **intel) == f"cpu avx512 x{cores}"
    assert compute_kind("cpu", frozenset({"fma"}), **intel) == f"cpu avx2 x{cores}"
    assert compute_kind("cpu", frozenset(), **intel) == f"cpu other x{cores}"
    if not torch.cuda.is_available():
        assert compute_kind("auto", frozenset({"fma"}), **intel) == f"cpu avx2 x{cores}"  # bench.ikl's --device default


def test_compute_kind_names_a_maker_other_than_intel(tmp_path: Path) -> None:
    """The same unit on another maker's cores is another kind: its times must not pool with Intel's."""
    cores = os.cpu_count()
    bf16 = frozenset({"fma", "avx512f", "avx512_bf16"})
    assert compute_kind("cpu", bf16, vendor="amd") == f"cpu amd avx512-bf16 x{cores}"
    assert compute_kind("cpu", bf16, vendor="") == f"cpu avx512-bf16 x{cores}"  # unknown: as the earlier records
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\n")
    assert (cpu_vendor(str(info)), cpu_model(str(info))) == ("amd", "AMD EPYC 9B45")
    info.write_text("vendor_id\t: HygonGenuine\n")
    assert (cpu_vendor(str(info)), cpu_model(str(info))) == ("hygongenuine", "")
    assert (cpu_vendor(str(tmp_path / "missing")), cpu_model(str(tmp_path / "missing"))) == ("", "")
