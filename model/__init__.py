"""MicroFlow: sub-pixel ground displacement from optical image pairs.

The science, as pure torch/numpy: the correlation-free U-Net and its refinement loop,
warping, losses, log-TV denoising, Okada (1985) faults and semi-synthetic pairs, the
frequency-correlator baseline and metrics. Public API:

- ``estimate_displacement(pre, post, *, denoise=True, weights=None, device=None)``
- ``load_model(name_or_path)``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .inference import estimate_displacement
    from .registry import load_model

__all__ = ["estimate_displacement", "load_model"]


def __getattr__(name: str) -> Any:  # lazy: `import model.okada` does not load torch
    if name == "estimate_displacement":
        from .inference import estimate_displacement

        return estimate_displacement
    if name == "load_model":
        from .registry import load_model

        return load_model
    raise AttributeError(f"module 'model' has no attribute {name!r}")
