"""The mixed-bfloat16 warning: said on an x86 CPU without native bfloat16, not otherwise."""

import platform

import pytest

from fer_tf.training.precision import bfloat16_warning, cpu_flags

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n"


@pytest.fixture
def x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


def test_warns_on_an_avx2_cpu_and_says_what_to_set(tmp_path, x86):
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2)
    assert cpu_flags(info) == {"fpu", "sse2", "avx", "avx2", "fma"}
    text = bfloat16_warning(True, cpuinfo=info)
    assert "no native bfloat16" in text and "train.mixed_precision=false" in text


def test_silent_with_bf16_an_accelerator_float32_or_no_cpuinfo(tmp_path, x86):
    info = tmp_path / "cpuinfo"
    info.write_text(BF16)
    assert bfloat16_warning(True, cpuinfo=info) is None
    info.write_text(AVX2)
    assert bfloat16_warning(False, cpuinfo=info) is None
    assert bfloat16_warning(True, accelerators=1, cpuinfo=info) is None
    assert bfloat16_warning(True, cpuinfo=tmp_path / "missing") is None


def test_silent_on_other_architectures(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2)
    assert bfloat16_warning(True, cpuinfo=info) is None
