"""The inference ablation runs every variant on a sample file and reports each range."""

import numpy as np

from bench.ablation import main
from model.dataset import generate_samples


def test_ablation_reports_every_variant_and_range(tmp_path, texture, capsys):
    s = generate_samples([texture.astype(np.float32)], 8, 96, np.random.default_rng(1))
    path = tmp_path / "val.npz"
    np.savez(path, **s.to_dict())
    main(["--val", str(path), "--weights", "untrained:tiny", "--per-range", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11  # header + 10 variants
    for name in ("as shipped", "correlator start", "+ sharpening", "sharpened start"):
        assert any(line.strip().startswith(name) for line in lines), name
    for line in lines[1:]:
        assert all(r in line for r in ("translation", "very_small", "small", "large"))
