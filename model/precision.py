"""Numeric precision choices per device."""

from __future__ import annotations

import torch


def device_or_default(device: str | torch.device | None = None) -> torch.device:
    """``device``, or by default CUDA where there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast where it is fast: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available()
                        and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False
