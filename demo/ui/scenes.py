"""Lesson scenes: one click sets the example, attack, mode and defenses of a lesson and runs it.

Each scene says in one sentence what to notice, and states which columns come out right or wrong.
Those claims are run on both teaching models by tests/ui/test_lesson.py, which checks that they hold
on the models a scene lists in `holds_on` and fail on the others, where the scene says why; so a scene
cannot go on promising what a model no longer shows. Beside its one-image result each scene
quotes the measured population number (`population`, filled from docs/results by
`fill`: the defense numbers of `demo.eval.publish.published` and the lesson runs of
`demo.eval.publish.lessons`), so a class sees both the anecdote and the measurement.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NONE = {"training-time": "none", "test-time": "none", "training-free": "none"}
# The model the scenes' population numbers were measured on; on any other the page says so.
MEASURED_ON = "teaching"
# Models every scene's one-image claims are run on by the tests: each scene states on which they hold.
CHECKED = ("teaching", "teaching-vit")
VIT = "teaching-vit"
OTHER_MODEL_NOTE = ("*This scene was measured on the ResNet teaching model (first in the Model selector); on the "
                    "model chosen now, what it says may not happen.*")
SAME_ON_VIT = "*On the ViT teaching model this scene shows the same (checked on this image).*"
BASE = {"attack": "pgd", "eps": "4", "steps": "10", "mode": "oblivious", "seed": "0", "crafted": ""}


@dataclass(frozen=True)
class Scene:
    title: str
    notice: str                      # one sentence: what to look at
    setup: dict                      # link parameters (see `share.apply_query`)
    # (changes to `setup`, column key, whether that column is correct) that the scene promises
    claims: list = field(default_factory=list)
    population: str = ""             # the same lesson measured on many images, in published tokens
    holds_on: tuple = CHECKED        # the checked models on which every claim holds
    vit: str = ""                    # why it does not on the ViT teaching model, in that model's published tokens

    def query(self, **changes) -> dict:
        return {**BASE, **NONE, **self.setup, **changes}


TECOA = Scene(
    "Robust weights resist an attack aimed at them",
    "The attack is aimed at TeCoA itself (adaptive), and its adversarially trained image tower still says "
    "red star; the undefended model is fooled.",
    {"example": "teaching_red_star", "mode": "adaptive", "training-time": "tecoa"},
    [({}, "attacked", False), ({}, "training-time", True)],
    "On {{tecoa.seen.n}} seen test images TeCoA stays right on {{tecoa.seen.adaptive}} under this attack aimed "
    "at it (undefended: {{none.seen.worst}}) and on {{tecoa.aa4.worst}} of {{tecoa.aa4.n}} under AutoAttack "
    "(undefended: {{none.aa4.worst}}), at a clean cost ({{tecoa.seen.clean}} against {{none.seen.clean}}): "
    "it resists, but most images still fall to the stronger attack.",
    holds_on=("teaching",),
    vit=("its TeCoA tower got the ResNet's budget of adversarial fine-tuning, too short for a ViT, and says "
         "red cross. On {{tecoa.seen.n}} seen test images it is right on {{tecoa.seen.clean}} of clean ones "
         "and on {{tecoa.seen.adaptive}} under this attack aimed at it (undefended: {{none.seen.worst}})."))

# A defense judged by an attack that ignores it looks stronger than it is. How strong JPEG is, its worst case
# says: quoted beside TeCoA's, not ranked in words (ranking is the leaderboard's, with its tests of ties).
FLATTERED = Scene(
    "An attack that ignores a defense flatters it",
    "JPEG undoes an attack made for the plain model (switch to oblivious and run again), but once the attack "
    "goes through the compression it is fooled too: judge a defense by its worst case over every attack.",
    {"example": "teaching_cyan_triangle", "mode": "adaptive", "training-free": "jpeg"},
    [({}, "training-free", False), ({"mode": "oblivious"}, "training-free", True)],
    "On {{jpeg.seen.n}} seen test images JPEG keeps {{jpeg.seen.oblivious}} right against the oblivious "
    "attack and {{jpeg.seen.worst}} once the attack through it is counted too; AutoAttack through it leaves "
    "{{jpeg.aa4.worst}} of {{jpeg.aa4.n}} (TeCoA: {{tecoa.aa4.worst}}). Passing the compression as if it were "
    "the identity (BPDA) is the weakest stand-in for its gradient: through a differentiable approximation of "
    "JPEG, PGD-10 leaves {{jpeg.seen.diff}} where BPDA left {{jpeg.seen.adaptive}}, and counting every attack "
    "per image {{jpeg.board.worst}} of {{jpeg.board.n}} survive.",
    holds_on=("teaching",),
    vit=("JPEG does not undo even the oblivious attack here: the ViT's perturbations survive compression. On "
         "{{jpeg.seen.n}} seen test images JPEG keeps {{jpeg.seen.oblivious}} right against the oblivious "
         "attack and {{jpeg.seen.adaptive}} when the attack goes through it."))

# What protects R-TPT is its vote over random crops, not its one tuning step (one AdamW step moves every
# prompt value by about the learning rate, lr * sign(gradient), whatever the image): the published
# decomposition (demo.eval.randomized with tune/vote switched off) is quoted. The vote stops the attack made
# for the plain model (the live steps); attacked as the randomized ensemble it is (EOT over its crops, and the
# strong attack at the draw count where the PGD curve flattened) it keeps a few images, too few to tell apart
# from the undefended model on the images run so far (McNemar; tests/ui/test_learn_texts.py).
CROPS = Scene(
    "A crop vote stops an attack made for the plain model",
    "R-TPT classifies 64 views of the attacked image (63 of them random crops) and trusts the views that agree "
    "with the others: a perturbation made for the plain model, on the whole image, does not survive the crops. "
    "That vote, a randomized ensemble, is what protects it, not its one small prompt-tuning step, so it has to "
    "be attacked as an ensemble, through many draws of its crops (Croce et al., 2022, on evaluating test-time "
    "defenses).",
    {"example": "teaching_cyan_triangle", "test-time": "rtpt"},
    [({}, "attacked", False), ({}, "test-time", True)],
    "On {{rtpt.seen.n}} seen test images R-TPT keeps {{rtpt.seen.oblivious}} right against this oblivious "
    "attack. Attacked as a randomized defense is (the gradient averaged over draws of its crops, each image's "
    "strongest point kept, and every attacked image scored on {{rtpt.protocol.draws}} fresh draws), EOT-PGD-10 "
    "leaves {{rtpt.protocol.worst}} of {{rtpt.protocol.n}} images right on every draw ({{rtpt.protocol.eot}} "
    "draws per step, the count that left the fewest) and the strong attack, EOT-APGD with 100 iterations, "
    "{{rtpt.strong.worst}}; counting every attack image by image, {{rtpt.board.worst}} of {{rtpt.board.n}} "
    "survive, where the undefended model keeps {{none.aa4.worst}} under AutoAttack: on so few images McNemar's "
    "test cannot yet tell the two apart. These attacks hold the tuned prompt fixed in their backward pass, so "
    "even they are upper bounds. On unseen classes R-TPT is right on only {{rtpt.held_out.clean}} of clean "
    "images (undefended: {{none.held_out.clean}}).")

# Goodfellow et al. (2015): the perturbation is chosen, not random. Same example, same 4/255: only the
# direction differs.
NOISE = Scene(
    "Noise is not an attack",
    "Random noise of the same size (every pixel moved by 4/255 up or down at random) leaves the model right; "
    "PGD at the same 4/255 fools it (switch the attack to PGD and run again): an adversarial perturbation is "
    "chosen, not random (Goodfellow et al., 2015).",
    {"example": "teaching_cyan_triangle", "attack": "noise"},
    [({}, "attacked", True), ({"attack": "pgd"}, "attacked", False)],
    "On {{run:lesson_noise_corners_4.n}} seen test images random corners at 4/255 leave "
    "{{run:lesson_noise_corners_4.robust}} right and Gaussian noise of the same energy "
    "{{run:lesson_noise_gaussian_4.robust}} (clean: {{run:lesson_noise_corners_4.clean}}); PGD-10 at the same "
    "budget leaves {{run:lesson_pgd_4.robust}} of {{run:lesson_pgd_4.n}}.")

# Papernot et al. (2016), Liu et al. (2017): an image crafted on one model is handed to another. The two
# teaching towers share a text tower; at 4/255 with PGD-10 the published runs show little transfer, and
# the scene says so rather than the folklore.
TRANSFER = Scene(
    "Does an attack transfer?",
    "The attack is crafted on the ViT teaching model and answered by the ResNet one (the Crafted on setting): the ResNet "
    "stays right, while the same attack crafted on the ResNet itself fools it (set Crafted on back to the same "
    "model). Here, at 4/255, an attack made for another image tower rarely transfers (Papernot et al., 2016; "
    "Liu et al., 2017, find more transfer with bigger budgets and ensembles of source models).",
    {"example": "teaching_cyan_triangle", "crafted": VIT},
    [({}, "attacked", True), ({"crafted": ""}, "attacked", False)],
    "On {{run:transfer_vit_to_resnet.n}} seen test images crafted on the ViT, the ResNet stays right on "
    "{{run:transfer_vit_to_resnet.robust}} (attacked on itself: {{run:lesson_pgd_4.robust}}); crafted on the "
    "ResNet, the ViT stays right on {{run:transfer_resnet_to_vit.robust}} (on itself: {{run:vit_lesson_pgd_4.robust}}).",
    holds_on=("teaching",),
    vit=("an attack crafted on the ViT is white-box when the ViT answers, not a transfer: choose the ResNet "
         "teaching model to see it. Crafted on the ResNet, the ViT stays right on "
         "{{run:transfer_resnet_to_vit.robust}} of {{run:transfer_resnet_to_vit.n}} seen test images."))

SCENES = [
    Scene("A tiny change fools CLIP",
          "Compare Clean and Attacked: the pictures look the same, yet the attacked one is read as another shape; "
          "no pixel moved by more than 4/255.",
          {"example": "teaching_cyan_triangle"},
          [({}, "clean", True), ({}, "attacked", False)],
          "On {{none.seen.n}} seen test images the undefended model is right on {{none.seen.clean}} clean and "
          "on {{none.seen.worst}} after this attack (PGD-10, 4/255); AutoAttack leaves {{none.aa4.worst}}."),
    TECOA,
    FLATTERED,
    CROPS,
    Scene("Bigger budget, bigger damage",
          f"TeCoA held the red star at 4/255 (the scene \"{TECOA.title}\"); at 16/255 the same attack beats it: "
          "robustness always holds for a budget, not for every change.",
          {"example": "teaching_red_star", "mode": "adaptive", "training-time": "tecoa", "eps": "16"},
          [({}, "training-time", False), ({"eps": "4"}, "training-time", True)],
          "Measured on 200 seen test images (PGD-10 aimed at TeCoA): {{sanity.tecoa.0}} right with no attack, "
          "{{sanity.tecoa.4}} at 4/255, {{sanity.tecoa.8}} at 8/255 and {{sanity.tecoa.16}} at 16/255.",
          holds_on=("teaching",),
          vit=("its TeCoA tower already loses the red star at 4/255, so there is no budget step to show: on "
               "{{tecoa.seen.n}} seen test images it keeps {{tecoa.seen.adaptive}} right under PGD-10 at 4/255 "
               "aimed at it.")),
    NOISE,
    TRANSFER,
]


def fill(text: str, numbers: dict | None = None) -> str:
    """A scene's text with its published numbers: defense tokens ({{tecoa.seen.worst}}), then lesson-run
    tokens ({{run:lesson_pgd_4.robust}})."""
    from ..eval.publish import lessons, published

    return lessons.fill(published.fill(text, numbers))


def model_note(scene: Scene, model_key: str, vit_numbers: dict | None = None) -> str:
    """What the page adds to a scene on a model other than the one it was measured on (empty on that one)."""
    from ..eval.publish import published

    if model_key == MEASURED_ON:
        return ""
    if model_key in scene.holds_on:
        return SAME_ON_VIT if model_key == VIT else ""
    if model_key == VIT and scene.vit:
        if vit_numbers is None:
            vit_numbers = published.defense_numbers(published.model_results(published.load(), VIT))
        return "*On the ViT teaching model this scene does not show what it says:* " + fill(scene.vit, vit_numbers)
    return OTHER_MODEL_NOTE
