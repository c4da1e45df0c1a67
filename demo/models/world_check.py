"""Does an image belong to the teaching world? A calibrated out-of-distribution check for the teaching model.

The teaching model only knows coloured shapes on patterned grounds; shown a portrait it still answers
"orange ring (42%)", and that answer means nothing. The check scores how far an image's feature
statistics lie from the world's: at each stage of the image tower (the four ResNet stages, or four
transformer blocks of a ViT) the per-channel mean and standard deviation, and the Mahalanobis distance of
that vector to a Gaussian fitted on world images (Lee et al., "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018, used there on intermediate
features; the feature statistics follow Sastry & Oore, ICML 2020, who score such per-layer statistics).
Such statistics describe texture and colour, where photos and noise differ most from rendered shapes;
the final embedding, which the world was trained to map onto its 64 captions, separates them less well
(the best image-text cosine missed the app's photo-like examples).

The threshold is the 99.5th percentile of the score on calibration images that neither training nor
evaluation uses, so about 0.5% of world images raise a false alarm. `python -m demo.eval.check_world fit
[--model teaching-vit]` writes world_check.safetensors into that teaching model's folder; `... measure` reports the
false-alarm rate on the evaluation images and the detection rate on `demo.world.outside`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .loading import LoadedModel
from .teaching import MODELS, TeachingModel

CHECK_FILE = "world_check.safetensors"
FIT_SEED, CALIBRATION_SEED = 40_000, 50_000  # render seeds no training stream nor evaluation uses
QUANTILE = 0.995


class WorldCheckError(RuntimeError):
    """The model has no fitted world check, or an image tower this check cannot read."""


def _normalize(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(loaded.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _stats(flat: torch.Tensor) -> torch.Tensor:
    return torch.cat([flat.mean(2), flat.std(2)], 1).float().cpu()


@torch.no_grad()
def stage_stats(loaded: LoadedModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Per stage of the image tower, (N, 2C): each channel's mean and standard deviation over positions.
    Computed by calling the stages directly, never through hooks, so requests sharing the model cannot
    see each other's activations."""
    visual, xn = loaded.clip.visual, _normalize(loaded, x.to(loaded.device))
    out = []
    if hasattr(visual, "stem") and hasattr(visual, "layer1"):  # open_clip ModifiedResNet
        act = visual.stem(xn.to(visual.conv1.weight.dtype))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            act = getattr(visual, name)(act)
            out.append(_stats(act.flatten(2)))
    elif hasattr(visual, "_embeds") and hasattr(visual, "transformer"):  # open_clip VisionTransformer
        tokens, blocks = visual._embeds(xn.to(visual.conv1.weight.dtype)), visual.transformer.resblocks
        keep = {round(i * (len(blocks) - 1) / 3) for i in range(4)}
        for i, block in enumerate(blocks):
            tokens = block(tokens)
            if i in keep:
                out.append(_stats(tokens.transpose(1, 2)))
    else:
        raise WorldCheckError(f"no world check for an image tower of type {type(visual).__name__}")
    return out


@dataclass(frozen=True)
class WorldCheck:
    """Per stage a Gaussian (mean, precision) of the world's statistics; the score is the mean over stages
    of the log Mahalanobis distance, so no single stage's scale dominates."""
    means: tuple[torch.Tensor, ...]
    precisions: tuple[torch.Tensor, ...]
    threshold: float

    def scores(self, loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
        logs = []
        for s, mean, precision in zip(stage_stats(loaded, x), self.means, self.precisions):
            d = s - mean
            logs.append(((d @ precision) * d).sum(1).clamp_min(1e-6).log())
        return torch.stack(logs).mean(0)

    def outside(self, loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
        return self.scores(loaded, x) > self.threshold


SENTENCE = ("This image is not from the teaching world: the offline teaching model only knows 64 coloured "
            "shapes (8 colours, 8 shapes) on patterned backgrounds, so its answers here mean nothing. With the "
            "model hub reachable, a real CLIP model (ViT-B-32) is one choice away in the Model selector.")


@dataclass(frozen=True)
class Verdict:
    outside: bool
    score: float
    threshold: float

    @property
    def sentence(self) -> str:
        return SENTENCE if self.outside else ""


def _world(n: int, seed: int, image_size: int, split: str = "seen") -> torch.Tensor:
    from .. import world

    return torch.cat([world.make_batch(100, seed + c, image_size, split)[0] for c in range(-(-n // 100))])[:n]


def batched(loaded: LoadedModel, x: torch.Tensor, fn) -> torch.Tensor:
    """`fn(loaded, x)` in batches of 100 images, concatenated."""
    return torch.cat([fn(loaded, x[i:i + 100]) for i in range(0, len(x), 100)])


def fit(loaded: LoadedModel, n_fit: int = 2000, n_calibration: int = 1000) -> WorldCheck:
    x = _world(n_fit, FIT_SEED, loaded.image_size)
    per_batch = [stage_stats(loaded, x[i:i + 100]) for i in range(0, len(x), 100)]
    means, precisions = [], []
    for k in range(len(per_batch[0])):
        stats = torch.cat([b[k] for b in per_batch])
        mean = stats.mean(0)
        cov = torch.cov((stats - mean).T) + 1e-3 * torch.eye(stats.shape[1])
        means.append(mean)
        # Stored in fp16 (half the file); rounded before calibrating, so the threshold fits what ships.
        precisions.append(torch.linalg.inv(cov).half().float())
    partial = WorldCheck(tuple(means), tuple(precisions), float("inf"))
    calib = batched(loaded, _world(n_calibration, CALIBRATION_SEED, loaded.image_size), partial.scores)
    return WorldCheck(partial.means, partial.precisions, float(calib.quantile(QUANTILE)))


def save(check: WorldCheck, folder: Path) -> Path:
    path = Path(folder) / CHECK_FILE
    tensors = {"threshold": torch.tensor([check.threshold])}
    for k, (mean, precision) in enumerate(zip(check.means, check.precisions)):
        tensors[f"mean_{k}"], tensors[f"precision_{k}"] = mean.contiguous(), precision.half().contiguous()
    save_file(tensors, str(path))
    return path


@lru_cache(maxsize=8)
def _load(path: str) -> WorldCheck:
    t = load_file(path)
    stages = sorted(int(k.split("_")[1]) for k in t if k.startswith("mean_"))
    return WorldCheck(tuple(t[f"mean_{k}"] for k in stages), tuple(t[f"precision_{k}"].float() for k in stages),
                      float(t["threshold"][0]))


def teaching_model_of(loaded: LoadedModel) -> TeachingModel | None:
    """The teaching model that `loaded` is, or is a robust twin of (None for models of the real world)."""
    return MODELS.get(loaded.key) or MODELS.get(loaded.spec.base or "")


def check_for(loaded: LoadedModel) -> WorldCheck | None:
    """The fitted check of a teaching model (None for models that know the real world)."""
    which = teaching_model_of(loaded)
    if which is None:
        return None
    path = which.folder / CHECK_FILE
    return _load(str(path)) if path.is_file() else None


def reference_model(loaded: LoadedModel) -> LoadedModel | None:
    """The model whose features judge images for `loaded`: the ResNet teaching model, for both teaching
    models. Whether an image comes from the world does not depend on which model looks at it, and the
    ViT's own statistics told the world apart from photos and noise far worse (fitted the same way on an
    earlier ViT tower, its check caught 0 of 11 photos and 0 of 20 noise images;
    docs/results/world_check_vit.json)."""
    if teaching_model_of(loaded) is None:
        return None
    if loaded.key == "teaching":
        return loaded
    from .loading import load_model

    return load_model("teaching", loaded.device)


def verdict(loaded: LoadedModel, x: torch.Tensor) -> Verdict | None:
    """Whether the (1, 3, S, S) image lies outside the world the model knows; None when it knows photos."""
    judge = reference_model(loaded)
    check = check_for(judge) if judge is not None else None
    if check is None:
        return None
    if x.shape[-1] != judge.image_size:
        x = torch.nn.functional.interpolate(x, size=(judge.image_size,) * 2, mode="bilinear", antialias=True)
    score = float(check.scores(judge, x[:1])[0])
    return Verdict(score > check.threshold, score, check.threshold)
