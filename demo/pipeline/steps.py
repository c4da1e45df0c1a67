"""Watch an attack work: the image at each of its steps, with the true label's probability and the loss.

Attacks run on torchattacks record the input of every gradient step (`record_frames`); the frames are
quantized like the final image, so step k shows what the model would see if the attack stopped there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attacks._torchattacks import record_frames
from ..attacks.base import quantize_in_budget
from ..models.loading import LoadedModel
from . import budget
from .compare import check_image, check_request
from .inputs import InputError

MAX_FRAMES = 201


@dataclass
class Steps:
    labels: list[str]
    true_label: int
    clean: torch.Tensor            # (3, H, W)
    frames: list[torch.Tensor]     # (3, H, W) per step, the final adversarial image last
    true_prob: list[float]
    loss: list[float]
    predictions: list[str]


def attack_steps(loaded: LoadedModel, image: torch.Tensor, labels: list[str], true_label: int | None,
                 attack_name: str, attack_params: dict, target: int | None = None, seed: int = 0) -> Steps:
    """Run the attack on the undefended model and keep its image at every step (step 0: where it starts)."""
    labels, true_label, target, attack, _ = check_request(labels, true_label, target, attack_name, attack_params, None)
    image = check_image(image).to(loaded.device)
    steps = int(getattr(attack, "steps", 1) or 1)
    if steps + 1 > MAX_FRAMES:
        raise InputError(f"The step-by-step view keeps at most {MAX_FRAMES - 1} steps; this attack has {steps}.")
    budget.check(loaded, budget.comparison_passes(attack, [], False), budget.advice(attack, [], False))
    clf = loaded.classifier(labels)
    with torch.no_grad():
        probs = clf(image).softmax(-1)[0]
    if true_label is None:
        true_label = int(probs.argmax())
    y = torch.tensor([true_label], device=image.device)
    t = None if target is None else torch.tensor([target], device=image.device)
    with record_frames() as recorded:
        result = attack(clf, image, y, target=t, seed=int(seed))
    if not recorded:
        raise InputError(f"{attack.title or attack.name} does not expose its steps; pick PGD, FGSM or APGD.")
    eps = getattr(attack, "budget", None)
    frames = [quantize_in_budget(f.to(image.device), image, eps, attack.norm) for f in recorded[:MAX_FRAMES - 1]]
    frames.append(result.adv_images)
    with torch.no_grad():
        logits = clf(torch.cat(frames))
    p = logits.float().softmax(-1)
    return Steps(labels, true_label, image[0], [f[0] for f in frames], p[:, true_label].tolist(),
                 F.cross_entropy(logits.float(), y.expand(len(frames)), reduction="none").tolist(),
                 [labels[int(i)] for i in p.argmax(-1)])
