"""The inference ablation runs every variant on a sample file and reports each range."""

import numpy as np
import torch

from bench.ablation import flip_average, main
from model.dataset import generate_samples


def test_ablation_reports_every_variant_and_range(tmp_path, texture, capsys):
    s = generate_samples([texture.astype(np.float32)], 8, 96, np.random.default_rng(1))
    path = tmp_path / "val.npz"
    np.savez(path, **s.to_dict())
    main(["--val", str(path), "--weights", "untrained:tiny", "--per-range", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8  # header + 7 variants
    assert any(line.strip().startswith("correlator start") for line in lines)
    for line in lines[1:]:
        assert all(r in line for r in ("translation", "very_small", "small", "large"))


def test_flip_average_keeps_what_flips_with_the_image_and_drops_what_does_not():
    class Gradient(torch.nn.Module):
        """dx, dy = central differences of pre (circular): they flip sign with the image,
        like a displacement does; plus a constant offset, which does not."""

        def forward(self, a, b, **kw):
            gx = (torch.roll(a, -1, 3) - torch.roll(a, 1, 3)) / 2
            gy = (torch.roll(a, -1, 2) - torch.roll(a, 1, 2)) / 2
            return [torch.cat([gx, gy], 1), torch.cat([gx + 0.3, gy - 0.2], 1)]

    torch.manual_seed(0)
    pre, post = torch.randn(2, 1, 32, 48), torch.randn(2, 1, 32, 48)
    avg = flip_average(Gradient(), pre, post)
    assert torch.allclose(avg, Gradient()(pre, post)[0], atol=1e-6)
