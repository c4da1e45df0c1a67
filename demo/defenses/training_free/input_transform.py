"""Shared machinery for input-transformation defenses: transform the image, then classify it.

Adaptive attacks differentiate through each transform as exactly as it allows (Athalye, Carlini &
Wagner, ICML 2018). Rounding (bit depth) and JPEG quantization are flat almost everywhere and a median
filter routes the gradient to one pixel per window, so those use BPDA: the forward pass applies the
real transform, the backward pass treats it as the identity. A transform that is differentiable
(resizing and padding) is differentiated for real (`exact_gradient`): an identity backward would
ignore its rescale and shift and hand the attacker a misaligned gradient. Randomized transforms add
EOT: the defended model averages logits over several fresh draws.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch

from ...timing import Passes
from ..base import Defense, DefenseError, DefenseModule, DefenseOutput, Paradigm, bpda, local_generator


def check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise DefenseError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")


class _TransformModule(DefenseModule):
    """images -> logits through the transform: its real gradient where it has one (`exact_gradient`),
    else BPDA; EOT over `defense.draws` draws.

    Successive calls advance the module's generator, so attack steps see fresh random draws (as the
    defense would at test time) while a whole attack run stays reproducible.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = 0.0
        for _ in range(self.defense.draws):
            if self.defense.exact_gradient:
                logits = logits + self.clf(self.defense.transform(images, self.generator).clamp(0, 1))
                continue
            with torch.no_grad():
                transformed = self.defense.transform(images.detach(), self.generator).clamp(0, 1)
            logits = logits + self.clf(bpda(images, transformed))
        return logits / self.defense.draws


@dataclass
class InputTransformDefense(Defense):
    """Base class: subclasses implement `transform(images, generator)` -> images in [0,1].

    `eot_draws` is only used by randomized subclasses (they declare it as a field); deterministic
    transforms need a single draw.
    """

    paradigm: ClassVar[Paradigm] = Paradigm.TRAINING_FREE
    differentiable: ClassVar[bool] = False
    # True when `transform` is differentiable in the images: adaptive attacks then use its real gradient.
    exact_gradient: ClassVar[bool] = False
    module = _TransformModule

    @abc.abstractmethod
    def transform(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The transformed images (same shape, in [0,1]); no gradient needed."""

    def changed(self, images: torch.Tensor, transformed: torch.Tensor) -> dict:
        """Facts to display; by default how far the transform moved each image."""
        diff = (transformed - images).flatten(1).abs()
        return {"linf_change": diff.amax(1).tolist(), "mean_abs_change": diff.mean(1).tolist()}

    def predict(self, clf, images, seed):
        check_images(images)
        transformed = self.transform(images, local_generator(seed)).clamp(0, 1)
        return DefenseOutput(logits=clf(transformed), images=transformed, changed=self.changed(images, transformed))

    @property
    def draws(self) -> int:
        return int(getattr(self, "eot_draws", 1)) if self.randomized else 1

    def adaptive_passes(self):
        return Passes(grad=self.draws)
