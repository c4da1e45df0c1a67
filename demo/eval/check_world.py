"""python -m demo.eval.check_world {fit,measure} [--model teaching-vit] [--out docs/results/world_check]

The commands of the teaching world's out-of-distribution check (`demo.models.world_check`): `fit` writes
world_check.safetensors into a teaching model's folder; `measure` reports the false-alarm rate on the
evaluation images (seen and held-out classes) and the detection rate on `demo.world.outside`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..models.loading import LoadedModel, load_model
from ..models.world_check import WorldCheck, batched, check_for, fit, save, teaching_model_of
from ..pipeline import to_model_input
from ..world.outside import outside_images
from .run import load_world


def measure(loaded: LoadedModel, check: WorldCheck, n: int = 500) -> dict:
    """False alarms on the evaluation images (seen and held-out classes), detections per non-world kind."""
    out = {"threshold": check.threshold, "false_alarm": {}, "detected": {}}
    for split in ("seen", "held_out"):
        x, _ = load_world(n, loaded.image_size, split)
        out["false_alarm"][split] = {"n": n, "rate": float(batched(loaded, x, check.outside).float().mean())}
    total = hits = 0
    for kind, images in outside_images(loaded.image_size).items():
        x = torch.cat([to_model_input(loaded, im) for im in images])
        flags = check.outside(loaded, x)
        out["detected"][kind] = {"n": len(images), "rate": float(flags.float().mean())}
        total, hits = total + len(images), hits + int(flags.sum())
    out["detected"]["all"] = {"n": total, "rate": hits / total}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m demo.eval.check_world", description=__doc__.split("\n\n")[1])
    p.add_argument("cmd", choices=("fit", "measure"))
    p.add_argument("--model", default="teaching")
    p.add_argument("--out", help="measure: also write <out>.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_model(args.model, torch.device("cpu"))
    if args.cmd == "fit":
        which = teaching_model_of(loaded)
        if which is None:
            raise SystemExit(f"{args.model} is not a teaching model: the world check is for models of the teaching world")
        print(f"wrote {save(fit(loaded), which.folder)}")
        return
    check = check_for(loaded)
    if check is None:
        raise SystemExit(f"{args.model} has no fitted world check; run `python -m demo.eval.check_world fit`")
    result = {"command": "python -m demo.eval.check_world measure" + (f" --out {args.out}" if args.out else "")
              + (f" --model {args.model}" if args.model != "teaching" else ""),
              **measure(loaded, check)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
