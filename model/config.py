"""Named network configurations for the MicroFlow backbone and refinement loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MicroFlowConfig:
    """Width, depth and refinement settings of a MicroFlow model.

    Attributes:
        stem: channel widths of the convolution blocks at full resolution.
        down: channel widths of the blocks after each 2x downsampling; its length is
            the number of downsamplings (input sizes are padded to ``2**len(down)``).
        iterations: number of refinement iterations ``n``.
        shared_weights: one backbone for every iteration (True) or one per iteration.
        warp_mode: ``"bicubic"`` or ``"bilinear"`` resampling of ``post``.
        detach_between: stop gradients flowing through the flow fed to the next
            iteration (each iteration still gets its own loss term).
        flow_scale: the backbone output is multiplied by this (pixels per unit), so
            that an untrained network starts near zero displacement.
        pyramid_levels: coarse-to-fine levels: with 1, the same network first runs on
            2x average-pooled images and its (upsampled, doubled) field is ``df_0`` at
            full resolution, which halves the displacement it must find from scratch.
        correlator_start: at inference, ``df_0`` is the frequency correlator's field
            (``model.correlator_start``) instead of the coarse-to-fine estimate.
        sharpen: at inference, the last iterate is fault-sharpened
            (``model.sharpen.sharpen_field``) before σ and log-TV.
    """

    stem: tuple[int, ...] = (32, 32)
    down: tuple[int, ...] = (64, 96, 128, 256)
    iterations: int = 3
    shared_weights: bool = True
    warp_mode: str = "bicubic"
    detach_between: bool = True
    flow_scale: float = 1.0
    pyramid_levels: int = 0
    correlator_start: bool = False
    sharpen: bool = False

    def __post_init__(self) -> None:
        if not self.stem or any(c < 1 for c in self.stem + self.down):
            raise ValueError(f"channel widths must be positive, got {self.stem}, {self.down}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.pyramid_levels < 0:
            raise ValueError(f"pyramid_levels must be >= 0, got {self.pyramid_levels}")
        if self.warp_mode not in ("bicubic", "bilinear"):
            raise ValueError(f"warp_mode must be 'bicubic' or 'bilinear', got {self.warp_mode!r}")

    @property
    def multiple(self) -> int:
        """Input sizes are padded to a multiple of this (pixels)."""
        return 2 ** len(self.down)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MicroFlowConfig:
        d = dict(d)
        d["stem"] = tuple(d["stem"])
        d["down"] = tuple(d["down"])
        return cls(**d)


CONFIGS: dict[str, MicroFlowConfig] = {
    # CPU-sized: ~2 M parameters, with a coarse-to-fine start (one 2x level).
    "small": MicroFlowConfig(pyramid_levels=1),
    # The paper's backbone: 64/128 at full resolution, then 256, 512, 512, 1024
    # (4 downsamplings), separate weights per iteration, ~38 M parameters each.
    "paper": MicroFlowConfig(stem=(64, 128), down=(256, 512, 512, 1024), shared_weights=False,
                             pyramid_levels=1),
    # Tiny model for fast tests.
    "tiny": MicroFlowConfig(stem=(8,), down=(16, 16, 32, 32)),
}


def get_config(name: str) -> MicroFlowConfig:
    """Return the named config (``small``, ``paper`` or ``tiny``)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose from {sorted(CONFIGS)}") from None
