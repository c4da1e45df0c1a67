"""The words around the tables of the protocol for randomized defenses (`protocol_tables`)."""

PROSE = """Randomized and test-time defenses are attacked as AutoAttack's version for randomized defenses and
Croce et al. (ICML 2022) attack them (`python -m demo.eval.randomized`): each gradient step averages the loss
gradient over k fresh draws of the defense's randomness (EOT), k is swept 1, 2, 4, 8, 16; each image keeps its
highest-expected-loss iterate, never the clean image; each final image is scored on 10 fresh draws of the
defense. "Right on every draw" counts an image only if all 10 draws classify it correctly, and rankings use
it (it is never above the mean over draws). Consecutive draw counts are compared on the same images by
McNemar's exact test (two-sided, 5%), not by overlapping intervals; a curve whose last two counts differ is
still falling, and otherwise it is flat from the first count that no larger count is below (comparing only
neighbours would call a slowly falling curve flat at its start). The loss column shows whether more iterations would still
raise the attack's loss. Sizes follow the cost on 2 shared CPU cores: random resize & pad and TTC get
EOT-PGD-20 on 100 images (50 on the ViT), R-TPT and TPT EOT-PGD-10 on 30 (each of their draws is 64 views,
and each scoring draw a whole tuning), and the ViT's TAPT EOT-PGD-10 at the leaderboard's 4/255 on 30. The strong attack, AutoAttack's version for randomized defenses (EOT-APGD-CE and
EOT-APGD-DLR, 100 iterations each, per image the worse for the defense; `--attack apgd`), is run at the
count where a curve flattens; the leaderboard takes the lower of the two families.
"""

LEADERBOARD_PROSE = """Each randomized row attacked with EOT over the draws shown, every final image scored on
fresh draws of the defense; the number is the share of images right on every scoring draw at the draw count
that left the fewest (docs/results.md has the curves). A row still under way says how many images it has.
Rows not yet run under this protocol show the most EOT draws per step their `demo.eval` runs used; those
runs score each image on one draw of the defense, so their numbers above are upper bounds for this protocol.
"""

DECOMPOSITION_PROSE = """R-TPT has two halves: one AdamW step of the text prompt on the most confident views (pointwise
entropy), and the reliability-weighted vote over all 64 views. Each is switched off in turn (`--option
vote=false`: the tuned prompt classifies the full image alone; `--option tune=false`: the hand-written prompt
votes); the attack column is the protocol above at one EOT draw, on the same images for every variant.
"""

TAPT_PROSE = """TAPT starts from prompts trained adversarially (`demo.train tapt-prompts`: 150 AdamW steps at 1/255
on the teaching world; its paper trains AdvMaPLe prompts for 100 epochs of SGD on ImageNet) and adapts them per
image. Its paper's threat model attacks the starting prompts and then lets TAPT adapt; the adaptive run through
the adaptation itself is the ViT table's TAPT row (`vit_pgd1_tapt_seen`).
"""

PAIRED_PROSE = """Whether a row is really above the next one is decided by McNemar's exact test on the images both
were attacked on (two-sided, 5%): only the images that one row keeps and the other loses count. "tied with"
means the data cannot order the two rows, whatever their percentages; it replaces reading overlapping
intervals, which ignores that the rows share their images.
"""
