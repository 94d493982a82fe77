"""Numeric precision choices per device."""

from __future__ import annotations

from pathlib import Path

import torch

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""``/proc/cpuinfo`` flags of CPUs with bf16 arithmetic in hardware. Without them oneDNN
emulates bf16: on an AVX-512 Xeon without them the network took 7.52 s of CPU per block
in bf16 against 2.09 s in fp32 (``python -m bench.profile_pipeline --size 2560 --blocks 2``
with and without ``--bf16 off``; docs/speed-profile.md)."""


def device_or_default(device: str | torch.device | None = None) -> torch.device:
    """``device``, or by default CUDA where there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags from ``cpuinfo`` (Linux), or None where it cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_has_bf16(flags: frozenset[str] | None) -> bool:
    """Whether a CPU with these flags does bf16 in hardware; unknown flags (None, e.g. not
    Linux) leave the decision to oneDNN."""
    return flags is None or bool(flags & CPU_BF16_FLAGS)


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast where it is fast: CUDA with bf16, or a CPU with AVX512-BF16/AMX in
    hardware (oneDNN also reports bf16 on plain AVX-512, where it is emulated and slow)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if not cpu_has_bf16(cpu_flags()):
            return False
        try:
            return bool(torch.backends.mkldnn.is_available()
                        and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False
