"""The evaluation behind `python -m demo.eval`: clean and robust accuracy, attack success, perturbation
norms and cost, for the undefended model and, optionally, through each defense (oblivious and adaptive).

Oblivious: the attack targets the undefended classifier; its adversarial image is then classified
through the defense. Adaptive: the attack targets `defense.as_module(clf, seed)`, the differentiable
path through the defense (BPDA for non-differentiable steps, EOT for randomized ones). Robust accuracy
is always measured on the uint8-quantized adversarial image. Metric definitions: demo/eval/metrics.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .. import world
from ..attacks import ATTACKS, AttackError, AttackSpec, build_attack, quantize
from ..defenses import DEFENSES, DefenseError, stack
from ..models.loading import LoadedModel, ModelLoadError, load_model
from ..pipeline.transfer import source_classifier
from . import metrics as M
from .assemble import summarize

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Evaluation images come from seeds the training streams never use (they start at 10_000), in chunks
# of fixed size so the first k images are the same whatever --n and --batch-size are.
WORLD_SEED, WORLD_CHUNK = 5000, 100


class EvalError(ValueError):
    """Bad evaluation input (unknown data source, empty folder, parameter the attack lacks)."""


@dataclass
class Dataset:
    images: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    templates: tuple[str, ...]
    source: str


@dataclass
class EvalConfig:
    model: str = "teaching"
    attack: str = "pgd"
    params: dict = field(default_factory=dict)  # attack hyperparameters in pixel units
    n: int = 500
    seed: int = 0
    batch_size: int = 50
    data: str = "world"
    defenses: list[str] = field(default_factory=list)
    adaptive: bool = False
    targeted: bool = False
    device: str | None = None
    eot: int | None = None  # EOT draws per attack step for randomized defenses (None: each one's default)
    start: int = 0  # first image of this shard (a multiple of batch_size, so every batch keeps its seed)
    attack_model: str | None = None  # craft the attacks on this model, answer with `model` (transfer)


def load_world(n: int, image_size: int, split: str, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images start..start+n-1 of the split; the same image has the same index whatever start and n are."""
    # Whole chunks are always rendered (scenes are drawn per chunk), then cut to the range.
    first, last = start // WORLD_CHUNK, -(-(start + n) // WORLD_CHUNK)
    parts = [world.make_batch(WORLD_CHUNK, WORLD_SEED + c, image_size, split)[:2] for c in range(first, last)]
    lo = start - first * WORLD_CHUNK
    return torch.cat([p[0] for p in parts])[lo:lo + n], torch.cat([p[1] for p in parts])[lo:lo + n]


def load_folder(path: Path, model: LoadedModel, n: int) -> Dataset:
    """FOLDER/<class name>/*.png|jpg; classes are the sorted subfolder names."""
    if not path.is_dir():
        raise EvalError(f"--data {path}: not 'world', 'world-held-out' or an existing folder")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise EvalError(f"{path} needs at least 2 class subfolders with .png/.jpg images (found {len(classes)} "
                        f"folders, {len(files)} images)")
    if n < len(files):
        # A fixed subset (independent of --seed), so runs with different attack seeds see the same images.
        keep = sorted(torch.randperm(len(files), generator=torch.Generator().manual_seed(0))[:n].tolist())
        files = [files[k] for k in keep]
    images = torch.cat([model.preprocess(Image.open(f)).cpu() for f, _ in files])
    labels = torch.tensor([i for _, i in files])
    return Dataset(images, labels, classes, ("a photo of a {}.",), str(path))


def load_data(spec: str, model: LoadedModel, n: int, start: int = 0) -> Dataset:
    if spec in ("world", "world-held-out"):
        split = "seen" if spec == "world" else "held_out"
        images, labels = load_world(n, model.image_size, split, start)
        return Dataset(images, labels, list(world.CLASSNAMES), (world.EVAL_TEMPLATE,), spec)
    if start:
        # A folder's subset is drawn for its n, so a shard of it would not be a slice of the whole run.
        raise EvalError("--start (image shards) works on the world datasets only; evaluate a folder in one run")
    return load_folder(Path(spec), model, n)


def attack_params(name: str, eps: float | None = None, alpha: float | None = None, steps: int | None = None,
                  extra: dict | None = None) -> dict:
    """Command-line values -> attack hyperparameters in library units. Fields marked unit "/255" are given
    in /255 (like the UI); other fields (an L2 radius, CW's c) are taken as they are. Text values are read
    as the field's type. Without an explicit step size, an attack with one steps 2.5 * eps / steps. The
    conversion and the step rule are `demo.attacks`' (`AttackSpec`), shared with the page."""
    cls = ATTACKS.get(name)
    fields = {f.name: f for f in cls.params()}
    given = {k: v for k, v in {"eps": eps, "alpha": alpha, "steps": steps, **(extra or {})}.items() if v is not None}
    typed = {}
    for key, value in given.items():
        if key not in fields:
            raise EvalError(f"{cls.title or name} has no parameter {key!r}; it takes: {', '.join(fields)}")
        default = fields[key].default
        if isinstance(default, bool):
            value = str(value).lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)
        elif isinstance(default, str):
            value = str(value)
        else:
            value = int(value) if isinstance(default, int) else float(value)
        typed[key] = value
    return AttackSpec.from_display(name, typed).resolved()


def make_defense(name: str, eot: int | None = None):
    """A defense with its defaults; `eot` sets the EOT draws of every defense that has them. "stack" and
    "stack:TT+TTA+TF" name stacks of the three paradigms (demo/defenses/stack.py)."""
    if name == "stack" or name.startswith(stack.PREFIX):
        return stack.from_spec(name, eot)
    cls = DEFENSES.get(name)
    if eot is not None and "eot_draws" in {f.name for f in cls.params()}:
        return DEFENSES.create(name, eot_draws=int(eot))
    return DEFENSES.create(name)


def _batches(n: int, size: int):
    for b, start in enumerate(range(0, n, size)):
        yield b, slice(start, min(start + size, n))


class _Acc:
    """Accumulates per-batch tensors and costs."""

    def __init__(self):
        self.parts: dict[str, list[torch.Tensor]] = {}
        self.ms: dict[str, float] = {}
        self.passes: dict[str, dict[str, float]] = {}

    def add(self, key: str, t: torch.Tensor) -> None:
        self.parts.setdefault(key, []).append(t.detach().cpu())

    def cost(self, key: str, ms: float, passes: dict, n: int) -> None:
        """ms: for the whole batch; passes: per image, as attacks and defenses report them."""
        self.ms[key] = self.ms.get(key, 0.0) + ms
        total = self.passes.setdefault(key, {"forward": 0.0, "grad": 0.0})
        for kind in total:
            total[kind] += n * passes.get(kind, 0.0)

    def cat(self, key: str) -> torch.Tensor:
        return torch.cat(self.parts[key])


def _attack(atk, module, x, y, target, seed):
    res = atk(module, x, y, target=target, seed=seed)
    # Already quantized by the attack; rounding again is a no-op that makes the guarantee local.
    return quantize(res.adv_images), res


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation and return a JSON-ready dict (see `demo.eval.publish.report` for its rendering)."""
    start = time.perf_counter()
    device = torch.device(cfg.device) if cfg.device else None
    model = load_model(cfg.model, device)
    if cfg.start < 0 or cfg.start % cfg.batch_size:
        raise EvalError(f"--start must be a non-negative multiple of --batch-size ({cfg.batch_size}), so that every "
                        f"batch keeps the attack seed it has in the whole run; got {cfg.start}")
    data = load_data(cfg.data, model, cfg.n, cfg.start)
    clf = model.classifier(data.classnames, data.templates)
    # Transfer: every attack (adaptive ones through the defense too) is crafted on the source model.
    src_clf = source_classifier(load_model(cfg.attack_model, device), model, data.classnames,
                                data.templates) if cfg.attack_model else clf
    atk = build_attack(AttackSpec(cfg.attack, cfg.params), EvalError)
    if cfg.targeted and not atk.supports_targeted:
        raise EvalError(f"{atk.title or cfg.attack} has no targeted mode")
    defenses = {name: make_defense(name, cfg.eot) for name in cfg.defenses}
    n, C = data.labels.shape[0], len(data.classnames)
    target_all = None
    if cfg.targeted:  # a random wrong class per image, fixed by the seed
        g = torch.Generator().manual_seed(cfg.seed)
        target_all = (data.labels + torch.randint(1, C, (n,), generator=g)) % C

    acc, errors = _Acc(), {}
    n_batches = -(-n // cfg.batch_size)
    for b, sl in _batches(n, cfg.batch_size):
        log.info("batch %d/%d (%.0f s)", b + 1, n_batches, time.perf_counter() - start)
        x, y = data.images[sl].to(model.device), data.labels[sl].to(model.device)
        tgt = None if target_all is None else target_all[sl].to(model.device)
        seed = cfg.seed + cfg.start // cfg.batch_size + b  # the batch's seed in the whole run
        with torch.no_grad():
            acc.add("clean", clf(x))
        adv, res = _attack(atk, src_clf, x, y, tgt, seed)
        acc.cost("attack", res.timings.ms["attack"], res.passes, len(y))
        acc.add("delta", adv - x)
        with torch.no_grad():
            acc.add("adv", clf(adv))
        for name, d in defenses.items():
            if name in errors:
                continue
            try:
                out = d(clf, x, seed)
                acc.add(f"{name}/clean", out.logits)
                # Only the outer "defense" stage: predict may add its own sub-stages, which it already contains.
                acc.cost(f"{name}/defense", out.timings.ms["defense"], out.passes, len(y))
                acc.add(f"{name}/oblivious", d(clf, adv, seed).logits)
                if cfg.adaptive:
                    module = d.as_module(src_clf, seed)
                    if module is src_clf:  # the defense is the identity: the undefended attack is the adaptive one
                        adv_d, res_d = adv, res
                    else:
                        adv_d, res_d = _attack(atk, module, x, y, tgt, seed)
                    acc.cost(f"{name}/adaptive", res_d.timings.ms["attack"], res_d.passes, len(y))
                    acc.add(f"{name}/adaptive", d(clf, adv_d, seed).logits)
                    acc.add(f"{name}/adaptive_delta", adv_d - x)
                    for vname, variant in d.adaptive_variants().items():
                        adv_v, res_v = _attack(atk, variant.as_module(src_clf, seed), x, y, tgt, seed)
                        acc.cost(f"{name}/{vname}", res_v.timings.ms["attack"], res_v.passes, len(y))
                        acc.add(f"{name}/variant/{vname}", d(clf, adv_v, seed).logits)
            except (DefenseError, ModelLoadError, AttackError) as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # one broken defense must not cost the other rows; the table says why
                log.exception("defense %s failed", name)
                errors[name] = f"{type(exc).__name__}: {exc}"

    def cost(key: str) -> dict:  # totals over the images; summarize divides
        return {"ms": acc.ms[key], **acc.passes[key]}

    def preds(key: str) -> list[int]:
        return acc.cat(key).argmax(1).tolist()

    raw = {"labels": data.labels.tolist(), "clean_pred": preds("clean"), "adv_pred": preds("adv"),
           "target": None if target_all is None else target_all.tolist(),
           "linf": M.linf_norms(acc.cat("delta")).tolist(), "l2": M.l2_norms(acc.cat("delta")).tolist(),
           "cost": {"attack": cost("attack")}, "rows": []}
    for name, d in defenses.items():
        row = {"name": name, "title": d.title or name, "paradigm": d.paradigm.value,
               "differentiable": d.differentiable, "randomized": d.randomized,
               "eot_draws": getattr(d, "eot_draws", None) if d.randomized else None}
        if name in errors:
            raw["rows"].append({**row, "error": errors[name]})
            continue
        row["per_image"] = {"clean_pred": preds(f"{name}/clean"), "oblivious_pred": preds(f"{name}/oblivious")}
        row["cost"] = {"defense": cost(f"{name}/defense")}
        if cfg.adaptive:
            delta_d = acc.cat(f"{name}/adaptive_delta")
            row["per_image"].update({"adaptive_pred": preds(f"{name}/adaptive"),
                                     "adaptive_linf": M.linf_norms(delta_d).tolist(),
                                     "adaptive_l2": M.l2_norms(delta_d).tolist()})
            row["cost"]["adaptive"] = cost(f"{name}/adaptive")
            row["variants"] = {v: preds(f"{name}/variant/{v}") for v in d.adaptive_variants()}
            row["cost"].update({f"variant/{v}": cost(f"{name}/{v}") for v in d.adaptive_variants()})
        raw["rows"].append(row)

    meta = {
        "model": {"key": model.key, "label": model.spec.label, "image_size": model.image_size},
        "data": {"source": data.source, "n": n, "start": cfg.start, "num_classes": C,
                 "templates": list(data.templates)},
        "attack": {"name": cfg.attack, "title": atk.title or cfg.attack, "norm": atk.norm, "budget": atk.budget,
                   "params": {f.name: getattr(atk, f.name) for f in atk.params()},
                   "units": {f.name: f.metadata.get("unit", "") for f in atk.params()}, "targeted": cfg.targeted,
                   "crafted_on": cfg.attack_model or model.key},
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "adaptive": cfg.adaptive,
        "eot": cfg.eot,
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - start,
    }
    return summarize(meta, raw)
