"""Whether mixed bfloat16 training pays off on this machine.

``train.mixed_precision`` (Keras' ``mixed_bfloat16`` policy) is fast only where the hardware
computes in bfloat16: CPUs with AVX512-BF16 or AMX-BF16, or an accelerator. On a CPU without them
TensorFlow emulates bfloat16 and training runs several times slower than in float32 (measured with
``benchmarks/pretrain_speed.py`` on an AVX2-only 2-core EPYC: float32 250 images/s, mixed bfloat16
30; reports/fer2013/speed-avx2.json). :func:`bfloat16_warning` says so before a long run starts.
"""

from __future__ import annotations

import pathlib
import platform

#: CPU flags (``/proc/cpuinfo``) that mean native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` cannot be read: not Linux)."""
    try:
        text = pathlib.Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")) and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def bfloat16_warning(mixed_precision, accelerators=0, cpuinfo="/proc/cpuinfo"):
    """A warning to print when ``mixed_precision`` is asked for on an x86 CPU without native
    bfloat16 and no accelerator; ``None`` when there is nothing to say (or nothing known)."""
    if not mixed_precision or accelerators:
        return None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags = cpu_flags(cpuinfo)
    if not flags or flags & set(BF16_FLAGS):
        return None
    return ("warning: train.mixed_precision is on, but this CPU has no native bfloat16 "
            f"({' or '.join(BF16_FLAGS)}): TensorFlow emulates it, and training is several times "
            "slower than in float32 (about 8x on an AVX2 CPU); set train.mixed_precision: false "
            "(--set train.mixed_precision=false)")
