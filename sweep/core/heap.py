"""The C heap of a process that trains on the CPU: large buffers mapped and returned whole."""

from __future__ import annotations

import ctypes
import functools

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
# From this size on, an allocation gets a mapping of its own, given back to the system when freed.
MAP_FROM_BYTES = 1 << 20


@functools.cache
def map_large_buffers() -> bool:
    """Have glibc serve every allocation of MAP_FROM_BYTES or more from a mapping of its own (mallopt
    M_MMAP_THRESHOLD), once per process; whether it took.

    By default glibc raises that threshold whenever a mapped buffer is freed (up to 32 MB), so the
    activations and loss chunks that a training step allocates and frees come from the heap instead,
    and the heap keeps the pages they took among live blocks: a random 4-block Llama trial peaked
    about 550 MB higher without this (benchmarks/memory_estimate.py --heap both). Each mapped buffer costs
    its page faults, so a trial asks for this only where memory counts (sweep.engine.memory.maps_its_heap).
    False where the C library is not glibc (mallopt missing or refusing)."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MAP_FROM_BYTES))
    except (OSError, AttributeError):
        return False
