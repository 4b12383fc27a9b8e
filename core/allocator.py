"""Keep freed CPU memory inside the process, so a training loop stops paying page faults every step.

glibc's ``malloc`` serves large blocks (a batch of activations: megabytes) with ``mmap`` and hands
them back to the kernel on ``free``; the next step asks again, and the kernel zero-fills every page on
its first touch. A CPU training step allocates and frees the same blocks each time, so it pays for
that on every step: on a 2-core Xeon with AMX, 9,200 page faults and 57 ms of system time a step of
the reach config (bf16, batch 64), against 960 faults and 4 ms with freed memory kept.
"""

import ctypes
import sys

# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap at the top


def keep_freed_memory() -> bool:
    """Serve every block from the heap and keep freed blocks for reuse (glibc's ``mallopt``).

    The process's resident memory stays at its peak instead of dropping between steps, which a
    training loop reaches on every step anyway. Returns False, changing nothing, where the C library
    is not glibc (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _TRIM_NEVER))
