"""What the CPU computes natively, where the host's precision policy does not ask."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# x86: AVX512-BF16 or AMX-BF16; Arm: the BF16 extension (FEAT_BF16). Without them a CPU emulates
# bf16 arithmetic, and ComfyUI is right that it is slower than fp32 there.
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where this machine's CPU has bf16 instructions (read from /proc/cpuinfo on Linux;
    False where that cannot be read, the safe answer)."""
    try:
        return cpuinfo_has_native_bf16(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


def cpuinfo_has_native_bf16(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists a native bf16 feature (x86 "flags" or Arm "Features")."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features") and _NATIVE_BF16_FLAGS & set(value.split()):
            return True
    return False


def describe_cpu() -> str:
    """A short description for benchmark output: model name and whether bf16 is native."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{name} ({'native' if cpu_has_native_bf16() else 'no native'} bf16)"
