"""Promoting a checkpoint sets its inference start and keeps its weights."""

import json

import torch

from bench.promote import promote
from model.config import get_config
from model.microflow import MicroFlow
from model.registry import load_model, read_metadata, save_weights


def test_promote_sets_the_correlator_start_and_keeps_the_weights(tmp_path):
    run, dest = tmp_path / "run", tmp_path / "shipped"
    dest.mkdir()
    torch.manual_seed(0)
    model = MicroFlow(get_config("tiny"))
    save_weights(model, run / "m.safetensors", {"name": "m", "step": 7})
    (run / "m.json").write_text(json.dumps({"step": 7}))
    (run / "m.md").write_text("# m\n")
    out = promote(run, "m", correlator_start=True, dest=dest)
    meta = read_metadata(out)
    assert json.loads(meta["config"])["correlator_start"] is True
    assert json.loads(meta["step"]) == 7
    shipped = load_model(out, device="cpu")
    for a, b in zip(shipped.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert "correlator's field" in (dest / "m.md").read_text()
    assert json.loads((dest / "m.json").read_text())["step"] == 7
