"""Which models the benchmark measures, and stand-ins that let every defense run on any of them.

Model ids are anything `load_model` accepts, plus random-weight models: `random:ARCH` (any open_clip
architecture) and the shorthand `vit-b-32-random`. A random model has the same compute as the pretrained
one, and it is built the way real weights are loaded: `open_clip.create_model(ARCH, pretrained=None)`,
its state dict saved as safetensors, then loaded through `load_model` from that file.

The training-time defenses need robust twins (the defenses whose weights are an image tower) and APT a
learned prompt, which only some models have. For the others the benchmark registers stand-ins of the same shape, so that the rows measure
the same compute: random models get two more random checkpoints of the same architecture (so "base plus
two twins" also gives the memory of three loaded models), other models a second and third copy of their
own weights; APT gets the initial context ("a photo of a"). Each stand-in is listed in the report.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import open_clip
import torch

from ..defenses import DEFENSES
from ..defenses.base import Weights
from ..models.zoo import ZOO, ModelSpec, spec_for

RANDOM_PREFIX = "random:"
ALIASES = {"vit-b-32-random": "ViT-B-32"}
TWINS = tuple(DEFENSES.names(lambda c: c.trained_weights is Weights.IMAGE_TOWER))
# Random checkpoints are seeded: the base is seed 0, the twins' stand-ins 1, 2, ... in registry order.
TWIN_SEEDS = {which: seed for seed, which in enumerate(TWINS, start=1)}


def _titles(names, last: str = ", ") -> str:
    """The methods' short names, "TeCoA, FARE and PMG-AFT" with last=" and "."""
    titles = [DEFENSES.get(w).method() for w in names]
    return last.join([", ".join(titles[:-1]), titles[-1]] if len(titles) > 1 else titles)


def random_arch(model_id: str) -> str | None:
    """The open_clip architecture of a random-weight id, or None for any other id."""
    if model_id in ALIASES:
        return ALIASES[model_id]
    if model_id.startswith(RANDOM_PREFIX):
        return model_id[len(RANDOM_PREFIX):]
    return None


def random_checkpoint(arch: str, seed: int, folder: Path) -> Path:
    """A safetensors file with randomly initialised weights of `arch` (made once, then reused)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{arch.replace('/', '_')}-random-{seed}.safetensors"
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    del model
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(state, str(tmp))
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return path


def checkpoint_id(model_id: str, workdir: Path) -> str:
    """An id any process can load without `prepare` (cold start runs the app in a fresh interpreter)."""
    arch = random_arch(model_id)
    if arch is None:
        return model_id
    return f"{arch}={random_checkpoint(arch, 0, workdir)}"


def prepare(model_id: str, workdir: Path) -> tuple[str, list[str]]:
    """Register `model_id` (and its twin stand-ins where it has no twins) in this process's zoo.

    Returns (the key to load, notes on the stand-ins used). Idempotent.
    """
    arch = random_arch(model_id)
    notes: list[str] = []
    if arch is not None:
        base = ModelSpec(model_id, f"{arch} (random weights)", arch, str(random_checkpoint(arch, 0, workdir)),
                         online=False)
        twin_specs = {which: ModelSpec(f"{model_id}-{which}", f"{arch} (random weights, {which} stand-in)", arch,
                                       str(random_checkpoint(arch, seed, workdir)), base=model_id, online=False)
                      for which, seed in TWIN_SEEDS.items()}
        notes.append(f"{_titles(TWINS, ' and ')} twins: random {arch} checkpoints (seeds "
                     f"{', '.join(str(s) for s in TWIN_SEEDS.values())}), the base model is seed 0")
    else:
        base = spec_for(model_id)
        if all(which in base.twins for which in TWINS):
            return base.key, notes
        twin_specs = {which: dataclasses.replace(base, key=f"{base.key}#{which}", base=base.key, twins={},
                                                 label=f"{base.label} ({which} stand-in)")
                      for which in TWINS if which not in base.twins}
        notes.append(f"{_titles(twin_specs)}: another copy of the same weights "
                     "(the model has no robust twin)")
    twins = dict(base.twins)
    for which, spec in twin_specs.items():
        ZOO[spec.key] = spec
        twins[which] = spec.key
    ZOO[base.key] = dataclasses.replace(base, twins=twins)
    return base.key, notes


def ensure_apt_prompt(clf, workdir: Path) -> str | None:
    """Give APT a stand-in prompt (the initial 4-token context) when the model has no tuned one.

    Returns a note for the report, or None when the model has its own prompt.
    """
    from safetensors.torch import save_file

    from ..defenses.test_time.prompt_learner import CTX_INIT, PromptLearner
    from ..defenses.training_time import apt

    key = getattr(clf, "model_key", None)
    if key in apt.PROMPTS:
        return None
    ctx = PromptLearner.for_classifier(clf, CTX_INIT).init_context().detach().cpu().contiguous()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"apt-standin-{abs(hash(key)) % 10**8}-{os.getpid()}.safetensors"
    save_file({"ctx": ctx}, str(path))
    apt.PROMPTS[key] = path
    return f"APT prompt: the initial context {CTX_INIT!r} (no tuned prompt exists for this model)"


def ensure_visual_prompts(clf, workdir: Path) -> list[str]:
    """Give TAPT and FAP stand-in prompts of the right shapes when a ViT model has none, so their rows
    measure the same compute (the prompts are untrained; TAPT's statistics are those of random images).

    A tower that takes no prompt tokens (ModifiedResNet) gets none: its rows say the methods are not
    available there, as the app does. Returns notes for the report.
    """
    from safetensors.torch import save_file

    from ..defenses.base import DefenseError
    from ..defenses.test_time import maple, tapt
    from ..defenses.training_time import fap

    try:
        maple.check_tower(clf.clip.visual)
    except DefenseError as exc:
        return [f"TAPT and FAP: not available ({exc})"]
    key = getattr(clf, "model_key", None)
    tag = f"{abs(hash(key)) % 10**8}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    notes = []
    with torch.random.fork_rng(devices=[]):
        if key not in tapt.ASSETS or not all(p.is_file() for p in tapt.ASSETS[key]):
            prompts = maple.fresh_prompts(clf, torch.Generator().manual_seed(0))
            size = clf.clip.visual.image_size
            size = size[0] if isinstance(size, (tuple, list)) else size
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                _, inputs = maple.encode_image(clf, torch.rand(4, 3, size, size, generator=g), prompts,
                                               prompts.depth - 1)
            mean, var = tapt.token_stats([i.float() for i in inputs])
            paths = (workdir / f"tapt-standin-{tag}.safetensors", workdir / f"tapt-stats-standin-{tag}.safetensors")
            save_file({k: v.detach().float().contiguous() for k, v in prompts.state_dict().items()}, str(paths[0]))
            save_file({"adv_mean": mean.contiguous(), "adv_var": var.contiguous(),
                       "clean_mean": mean.clone(), "clean_var": var.clone()}, str(paths[1]))
            tapt.ASSETS[key] = paths
            notes.append("TAPT: untrained stand-in prompts, statistics of random images (no pre-trained prompts "
                         "exist for this model)")
        if key not in fap.PROMPTS or not fap.PROMPTS[key].is_file():
            prompts = fap.fresh_prompts(clf, torch.Generator().manual_seed(0))
            path = workdir / f"fap-standin-{tag}.safetensors"
            save_file({k: v.detach().float().contiguous() for k, v in prompts.state_dict().items()}, str(path))
            fap.PROMPTS[key] = path
            notes.append("FAP: untrained stand-in prompts (no learned prompts exist for this model)")
    return notes
