"""The CPU a benchmark ran on: model name and the ISA flags that decide its kernels.

Ratios between backends move with the ISA (AVX-512, AMX, VNNI, bf16), so every benchmark's
JSON carries this next to its figures.
"""

from __future__ import annotations

import os
import platform

ISA_PREFIXES = ("sse4", "avx", "fma", "amx", "f16c")


def cpu_info() -> dict:
    """{"model": ..., "isa": [...], "logical_cpus": n} from /proc/cpuinfo (platform fallback)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    isa = sorted(f for f in flags if f.startswith(ISA_PREFIXES) or f.endswith(("vnni", "bf16")))
    return {"model": model, "isa": isa, "logical_cpus": os.cpu_count()}
