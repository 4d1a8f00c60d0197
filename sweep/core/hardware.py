"""What the processor can do natively, read once: decides the precision `auto` picks on the CPU."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# x86 flags of native bf16 arithmetic: AVX512-BF16 dot products, or AMX tiles. Without them, torch's
# CPU bf16 kernels convert to fp32 and back, and bf16 autocast is many times slower than fp32.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor listed in /proc/cpuinfo's text."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def native_cpu_bf16() -> bool:
    """True where this x86 CPU computes in bf16 natively (Linux: read from /proc/cpuinfo)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(cpu_flags(text) & BF16_FLAGS)


@functools.cache
def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).

    Converting or quantizing a base tensor by tensor frees megabytes at a time among the small
    allocations that stay (quantization states, LoRA factors): glibc keeps such holes in its heap, and
    a 4-bit SmolLM2-135M held about 200 MB of them after loading (benchmarks/llm_scale.py)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
