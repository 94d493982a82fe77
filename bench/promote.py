"""Ship a training checkpoint: copy it into ``model/weights`` with its inference start.

    python -m bench.promote --run model/weights/next --name microflow-small --correlator-start

copies ``<run>/<name>.safetensors``, ``.json`` and ``.md`` into ``model/weights/``, with the
model config's ``correlator_start`` and ``sharpen`` set as asked (the start and the
sharpening used at inference; training mixes all starts), and says so in the model card.
Recalibrate σ afterwards
(``python -m bench.calibrate_sigma``): the calibration belongs to the weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from model.registry import WEIGHTS_DIR, load_model, read_metadata, save_weights


def promote(run: Path, name: str, correlator_start: bool, dest: Path = WEIGHTS_DIR,
            sharpen: bool = False) -> Path:
    """Copy checkpoint ``name`` from ``run`` into ``dest``; return the new weights path."""
    src = run / f"{name}.safetensors"
    model = load_model(src, device="cpu")
    model.config = replace(model.config, correlator_start=correlator_start, sharpen=sharpen)
    meta = {k: v for k, v in read_metadata(src).items() if k != "config"}
    out = dest / f"{name}.safetensors"
    save_weights(model, out, meta)
    shutil.copyfile(run / f"{name}.json", dest / f"{name}.json")
    start = ("the frequency correlator's field (`model/correlator_start.py`)"
             if correlator_start else "the coarse-to-fine estimate")
    start += ("; the last iterate is fault-sharpened (`model/sharpen.py`)" if sharpen else "")
    card = (run / f"{name}.md").read_text()
    card += (f"\n**Inference start**: `df_0` is {start}; config "
             f"`{json.dumps(model.config.to_dict())}`. σ calibration: "
             f"`{name}.sigma.json` (`python -m bench.calibrate_sigma`).\n")
    (dest / f"{name}.md").write_text(card)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="training output folder")
    p.add_argument("--name", default="microflow-small")
    p.add_argument("--correlator-start", action="store_true",
                   help="start inference from the correlator's field")
    p.add_argument("--sharpen", action="store_true",
                   help="fault-sharpen the last iterate at inference (model/sharpen.py)")
    args = p.parse_args(argv)
    print(promote(args.run, args.name, args.correlator_start, sharpen=args.sharpen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
