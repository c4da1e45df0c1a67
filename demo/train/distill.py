"""Distillation from the lending model's image tower, for a teaching model that borrows its text tower.

Two terms, both against the frozen ResNet teaching model on the same images:
- knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv 1503.02531): KL divergence from the
  ResNet's zero-shot distribution over the 64 class prompts to the student's;
- hints (FitNets; Romero et al., ICLR 2015, arXiv 1412.6550): the ViT's patch tokens after its middle
  block, through a linear regressor used only in training, regress the ResNet's layer-3 feature map,
  which has the same 8 x 8 grid at 128 px (each position layer-normalised, so no channel's scale dominates);
- factor distillation: the same KL over the 8 colour prompts and over the 8 shape prompts that the
  captions use ("a photo of something red.", "a photo of a heart."). Held-out pairs never appear in
  training, so the class-prompt KL only teaches seen pairs; the teacher's answers about colour alone and
  shape alone are what it knows about held-out pairs, and matching them asks the student's embedding to
  factor into colour and shape the way the teacher's does.
The hints give every patch token a target, where captions and class prompts give one per image; a ViT
trained from captions alone learned this world several times more slowly than the ResNet.
"""
from __future__ import annotations

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from .. import world
from ..models import teaching
from ..models.classifier import build_text_features


class Distiller(nn.Module):
    def __init__(self, which: teaching.TeachingModel, student: open_clip.CLIP, tokenizer, kd_weight: float,
                 hint_weight: float, factor_weight: float = 0.0):
        super().__init__()
        if which.text_weights is None:
            raise ValueError("distillation needs a model that borrows another's text tower (its teacher)")
        lender = open_clip.CLIP(**teaching.MODEL_CFG)
        lender.load_state_dict({k: v.float() for k, v in load_file(str(which.text_weights)).items()})
        self.teacher = lender.visual.eval().requires_grad_(False)
        with torch.no_grad():
            self.register_buffer("classes", build_text_features(student, tokenizer, world.CLASSNAMES,
                                                                [world.EVAL_TEMPLATE]))
            self.register_buffer("colours", build_text_features(student, tokenizer, world.COLOR_NAMES,
                                                                ["a photo of something {}."]))
            self.register_buffer("shapes", build_text_features(student, tokenizer, world.SHAPES,
                                                               ["a photo of a {}."]))
        self.kd_weight, self.hint_weight, self.factor_weight = kd_weight, hint_weight, factor_weight
        self.hint_block = len(student.visual.transformer.resblocks) // 2
        channels = self.teacher.layer3[-1].conv3.out_channels
        self.regressor = nn.Linear(student.visual.conv1.out_channels, channels) if hint_weight else None

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher image embedding (N, D), layer-3 map as (N, positions, C))."""
        t = self.teacher
        h = t.layer3(t.layer2(t.layer1(t.stem(x))))
        return t.attnpool(t.layer4(h)), h.flatten(2).transpose(1, 2)

    def encode(self, visual: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's image embedding and its patch tokens after the hint block."""
        tokens = visual._embeds(x)
        for i, block in enumerate(visual.transformer.resblocks):
            tokens = block(tokens)
            if i == self.hint_block:
                hint = tokens[:, 1:]
        pooled, _ = visual._pool(tokens)
        return pooled @ visual.proj if visual.proj is not None else pooled, hint

    def loss(self, x: torch.Tensor, embedding: torch.Tensor, hint: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        target_embedding, target_map = self.targets(x)
        teacher, student = F.normalize(target_embedding, dim=-1), F.normalize(embedding, dim=-1)
        loss = self.kd_weight * _kl(student, teacher, self.classes, scale)
        if self.factor_weight:
            loss = loss + self.factor_weight * (_kl(student, teacher, self.colours, scale)
                                                + _kl(student, teacher, self.shapes, scale))
        if self.regressor is not None:
            goal = F.layer_norm(target_map, target_map.shape[-1:])
            loss = loss + self.hint_weight * F.mse_loss(self.regressor(hint), goal)
        return loss


def _kl(student: torch.Tensor, teacher: torch.Tensor, prompts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between the zero-shot distributions over `prompts` of unit embeddings."""
    target = (scale * teacher @ prompts.t()).softmax(-1)
    return F.kl_div((scale * student @ prompts.t()).log_softmax(-1), target, reduction="batchmean")
