"""The teaching world: a procedural, captioned image world rendered in batches with torch.

Every image shows one colored shape (with a fine fill texture) on a textured background, plus sensor
noise. Scenes are drawn from a seeded `torch.Generator`, so a seed fixes the whole data set. Shapes are
rasterised from signed distance functions, which keeps rendering vectorised (a batch of 128 images at
128 px takes tens of milliseconds) and anti-aliased.

Some (color, shape) combinations are held out of training (`HELD_OUT`), so zero-shot accuracy on them
measures whether the model composes words it has only seen apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# name -> (hue in degrees, saturation range, value range)
COLORS: dict[str, tuple[float, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, (0.75, 1.0), (0.7, 1.0)),
    "orange": (30.0, (0.8, 1.0), (0.8, 1.0)),
    "yellow": (57.0, (0.75, 1.0), (0.85, 1.0)),
    "green": (120.0, (0.6, 1.0), (0.55, 0.95)),
    "cyan": (182.0, (0.6, 1.0), (0.75, 1.0)),
    "blue": (228.0, (0.65, 1.0), (0.65, 1.0)),
    "purple": (278.0, (0.55, 0.9), (0.55, 0.9)),
    "pink": (325.0, (0.3, 0.5), (0.9, 1.0)),
}
SHAPES = ["circle", "square", "triangle", "star", "heart", "cross", "ring", "moon"]
SIZES = ["small", "large"]
BACKGROUNDS = ["plain", "striped", "checkered", "dotted", "noisy", "cloudy"]
COLOR_NAMES = list(COLORS)
HUE_JITTER = 7.0

# One held-out shape per color (and one color per shape): a Latin-square diagonal.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    (c, SHAPES[(3 * i + 1) % len(SHAPES)]) for i, c in enumerate(COLOR_NAMES)
)
CLASSNAMES = [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES]
# Off-palette shapes (see `off_palette_hues`): saturation and value ranges, and how far (in degrees of
# hue) a shape's hue stays from the centre of its held-out colour. 27 degrees leaves 20 to the edge of
# that colour's jittered hues, and the saturation floor keeps them off pale pink.
OFF_PALETTE_SATURATION, OFF_PALETTE_VALUE, OFF_PALETTE_GAP = (0.5, 1.0), (0.55, 1.0), 27.0
SEEN_CLASSES = [i for i, n in enumerate(CLASSNAMES) if tuple(n.split()) not in HELD_OUT]
HELD_OUT_CLASSES = [i for i, n in enumerate(CLASSNAMES) if tuple(n.split()) in HELD_OUT]
EVAL_TEMPLATE = "a photo of a {}."

CAPTION_TEMPLATES = [
    "a photo of a {size} {color} {shape} on a {bg} background.",
    "a photo of a {color} {shape}.",
    "a {size} {color} {shape}.",
    "a {color} {shape} on a {bg} background.",
    "a photo of a {color} {shape} on a {bg} background.",
    "a {color} {shape}.",
    "a photo of a {shape}.",
    "a photo of something {color}.",
]


@dataclass
class Scenes:
    """Discrete attributes (index tensors) of a batch of scenes; continuous ones are drawn at render."""

    color: torch.Tensor
    shape: torch.Tensor
    size: torch.Tensor
    background: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        return self.color * len(SHAPES) + self.shape

    def __len__(self) -> int:
        return len(self.color)


def sample_scenes(n: int, generator: torch.Generator, split: str = "seen") -> Scenes:
    """Draw `n` scenes. split: "seen" (training combos), "held_out", or "all"."""
    pool = {"seen": SEEN_CLASSES, "held_out": HELD_OUT_CLASSES, "all": list(range(len(CLASSNAMES)))}
    if split not in pool:
        raise ValueError(f"split must be one of {sorted(pool)}, got {split!r}")
    classes = torch.tensor(pool[split])
    cls = classes[torch.randint(len(classes), (n,), generator=generator)]
    return Scenes(
        color=cls // len(SHAPES),
        shape=cls % len(SHAPES),
        size=torch.randint(len(SIZES), (n,), generator=generator),
        background=torch.randint(len(BACKGROUNDS), (n,), generator=generator),
    )


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def off_palette_hues(shapes: torch.Tensor, generator: torch.Generator, gap: float = OFF_PALETTE_GAP) -> torch.Tensor:
    """A hue (degrees) for each shape index, uniform over the circle except within `gap` of the hue of the
    colour that shape is held out in.

    Shapes drawn in these hues (`render(..., hues=...)`) and captioned by shape alone show every shape in
    nearly every hue, so colour stops predicting shape, while no image comes near a held-out combination.
    """
    held = torch.tensor([next(COLORS[c][0] for c, s in HELD_OUT if s == name) for name in SHAPES])[shapes]
    # Draw in the allowed arc directly: start past the gap and go round the rest of the circle.
    return (held + gap + torch.rand(len(shapes), generator=generator) * (360.0 - 2 * gap)) % 360.0


def off_palette_saturation_floor(shapes: torch.Tensor, floor: float) -> torch.Tensor:
    """The lowest off-palette saturation for each shape index: `floor`, except for a shape held out in a
    pale colour (pink), which keeps `OFF_PALETTE_SATURATION`'s floor, since pale shapes of any hue come
    close to that colour.
    """
    held_lo = torch.tensor([next(COLORS[c][1][0] for c, s in HELD_OUT if s == name) for name in SHAPES])[shapes]
    base = OFF_PALETTE_SATURATION[0]
    return torch.where(held_lo < base, torch.full_like(held_lo, base), torch.full_like(held_lo, min(floor, base)))


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h in degrees, s and v in [0,1]; returns (..., 3)."""
    h = (h % 360.0) / 60.0
    k = torch.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6], -1)
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _shape_sdf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Signed distances (inside < 0) of every shape at local coordinates, shape (S, N, H, W).

    y points down (image rows); shapes are scaled to fit the unit circle.
    """
    rho = torch.sqrt(x * x + y * y + 1e-12)
    phi = torch.atan2(-y, x)
    circle = rho - 0.9
    square = torch.maximum(x.abs(), y.abs()) - 0.72
    tri = None
    for k in range(3):  # edge normals of an upward triangle: down, upper-right, upper-left
        a = -math.pi / 2 + 2 * math.pi * k / 3
        d = x * math.cos(a) - y * math.sin(a)
        tri = d if tri is None else torch.maximum(tri, d)
    tri = tri - 0.46
    t = ((phi - math.pi / 2) * 5 / (2 * math.pi)) % 1.0  # 0 at a point, 0.5 between points
    star = rho - (0.38 + 0.52 * (2 * (t - 0.5).abs()) ** 1.6)
    lobe = torch.minimum(torch.sqrt((x - 0.36) ** 2 + (y + 0.22) ** 2), torch.sqrt((x + 0.36) ** 2 + (y + 0.22) ** 2)) - 0.42
    point = (x.abs() + (y - 0.02).abs()) / math.sqrt(2) - 0.5
    point = torch.maximum(point, -(y + 0.22))  # keep only the lower half of the diamond
    heart = torch.minimum(lobe, point)
    cross = torch.minimum(torch.maximum(x.abs() - 0.85, y.abs() - 0.27), torch.maximum(x.abs() - 0.27, y.abs() - 0.85))
    ring = (rho - 0.64).abs() - 0.22
    moon = torch.maximum(rho - 0.85, -(torch.sqrt((x - 0.38) ** 2 + (y + 0.18) ** 2) - 0.66))
    return torch.stack([circle, square, tri, star, heart, cross, ring, moon])


def _pattern(kind: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Binary-ish fine patterns in [0,1] per image: 0 plain, 1 stripes, 2 checker, 3 dots, 4 noise."""
    n, h, w = xs.shape
    period = _u(n, 3.0, 7.0, g)[:, None, None]
    ang = _u(n, 0, math.pi, g)[:, None, None]
    phase = _u(n, 0, 2 * math.pi, g)[:, None, None]
    u = (xs * torch.cos(ang) + ys * torch.sin(ang)) * 2 * math.pi / period + phase
    v = (-xs * torch.sin(ang) + ys * torch.cos(ang)) * 2 * math.pi / period + phase
    stripes = (torch.sin(u) > 0).float()
    checker = ((torch.sin(u) > 0) ^ (torch.sin(v) > 0)).float()
    dots = ((torch.cos(u) + torch.cos(v)) > 1.0).float()
    noise = torch.rand(n, h, w, generator=g)
    zero = torch.zeros_like(noise)
    stack = torch.stack([zero, stripes, checker, dots, noise])  # (5, N, H, W)
    return stack.gather(0, kind.view(1, n, 1, 1).expand(1, n, h, w))[0]


def render(scenes: Scenes, image_size: int, generator: torch.Generator, hues: torch.Tensor | None = None,
           saturation_floor: torch.Tensor | None = None) -> torch.Tensor:
    """Render scenes to float images (N, 3, H, W) in [0, 1].

    `hues` (degrees, one per scene) replaces the palette: each shape is drawn in that hue with the
    off-palette saturation and value ranges, and `scenes.color` is ignored. `saturation_floor` (one per
    scene, see `off_palette_saturation_floor`) lowers the off-palette saturation range's floor.
    """
    g, n, h = generator, len(scenes), image_size
    coords = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    xx, yy = xx.expand(n, h, h), yy.expand(n, h, h)
    pix = torch.arange(h, dtype=torch.float32)
    py, px = torch.meshgrid(pix, pix, indexing="ij")
    px, py = px.expand(n, h, h), py.expand(n, h, h)

    # Background: a desaturated base color with one of six textures.
    bg_rgb = hsv_to_rgb(_u(n, 0, 360, g), _u(n, 0.0, 0.3, g), _u(n, 0.1, 0.9, g))
    bg_alt = hsv_to_rgb(_u(n, 0, 360, g), _u(n, 0.0, 0.3, g), _u(n, 0.1, 0.9, g))
    b = scenes.background
    bg_kind = torch.tensor([0, 1, 2, 3, 4, 0])[b]  # cloudy starts plain and gets clouds below
    mix = _pattern(bg_kind, px, py, g)
    is_noisy = (b == 4)[:, None, None]
    mix = torch.where(is_noisy, mix * 0.6, mix)
    clouds = F.interpolate(torch.rand(n, 1, 6, 6, generator=g), size=(h, h), mode="bicubic", align_corners=False)[:, 0]
    mix = torch.where((b == 5)[:, None, None], clouds.clamp(0, 1), mix)
    img = bg_rgb[:, :, None, None] * (1 - mix[:, None]) + bg_alt[:, :, None, None] * mix[:, None]

    # The shape: random size, position and rotation, rasterised with a one-pixel soft edge.
    small = scenes.size == 0
    r = torch.where(small, _u(n, 0.28, 0.4, g), _u(n, 0.55, 0.75, g))
    cx = (1 - r) * _u(n, -0.9, 0.9, g)
    cy = (1 - r) * _u(n, -0.9, 0.9, g)
    rot = _u(n, -math.pi / 6, math.pi / 6, g)
    dx, dy = (xx - cx[:, None, None]) / r[:, None, None], (yy - cy[:, None, None]) / r[:, None, None]
    c, s = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    lx, ly = c * dx + s * dy, -s * dx + c * dy
    sdf = _shape_sdf(lx, ly).gather(0, scenes.shape.view(1, n, 1, 1).expand(1, n, h, h))[0]
    pixel = (2.0 / h) / r[:, None, None]
    mask = (0.5 - sdf / pixel).clamp(0, 1)

    if hues is None:
        hue_c = torch.tensor([v[0] for v in COLORS.values()])[scenes.color]
        s_lo, s_hi = (torch.tensor([v[1][i] for v in COLORS.values()])[scenes.color] for i in (0, 1))
        v_lo, v_hi = (torch.tensor([v[2][i] for v in COLORS.values()])[scenes.color] for i in (0, 1))
        hue = hue_c + _u(n, -HUE_JITTER, HUE_JITTER, g)
        sat = s_lo + (s_hi - s_lo) * torch.rand(n, generator=g)
        val = v_lo + (v_hi - v_lo) * torch.rand(n, generator=g)
    else:
        lo = torch.full((n,), OFF_PALETTE_SATURATION[0]) if saturation_floor is None else saturation_floor.float()
        sat = lo + (OFF_PALETTE_SATURATION[1] - lo) * torch.rand(n, generator=g)
        hue, val = hues.float(), _u(n, *OFF_PALETTE_VALUE, g)
    fg = hsv_to_rgb(hue, sat, val)
    fill = _pattern(torch.randint(5, (n,), generator=g), px, py, g)
    shade = 1 - _u(n, 0.0, 0.3, g)[:, None, None] * fill
    fg_img = fg[:, :, None, None] * shade[:, None]
    img = img * (1 - mask[:, None]) + fg_img * mask[:, None]

    noise_sd = _u(n, 0.0, 0.04, g)[:, None, None, None]
    img = img + noise_sd * torch.randn(img.shape, generator=g)
    # Stored on the uint8 grid, like any PNG the app reads: attacks and defenses see real 8-bit pixels.
    return torch.round(img.clamp(0, 1) * 255) / 255


def captions(scenes: Scenes, generator: torch.Generator, return_templates: bool = False):
    """One natural-English caption per scene, with a randomly chosen template (and its index)."""
    idx = torch.randint(len(CAPTION_TEMPLATES), (len(scenes),), generator=generator).tolist()
    out = []
    for i, t in enumerate(idx):
        out.append(
            CAPTION_TEMPLATES[t].format(
                size=SIZES[int(scenes.size[i])],
                color=COLOR_NAMES[int(scenes.color[i])],
                shape=SHAPES[int(scenes.shape[i])],
                bg=BACKGROUNDS[int(scenes.background[i])],
            )
        )
    return (out, torch.tensor(idx)) if return_templates else out


def caption_match(scenes: Scenes, templates: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: caption j is a true description of image i (every attribute it names matches).

    Captions that name fewer attributes describe many images; the training loss counts all of them as
    positives instead of pushing true descriptions apart.
    """
    attrs = {"color": scenes.color, "shape": scenes.shape, "size": scenes.size, "bg": scenes.background}
    match = torch.ones(len(scenes), len(scenes), dtype=torch.bool)
    for name, values in attrs.items():
        named = torch.tensor(["{" + name + "}" in t for t in CAPTION_TEMPLATES])[templates]  # (N,)
        same = values[:, None] == values[None, :]
        match &= same | ~named[None, :]
    return match


def make_batch(n: int, seed: int, image_size: int = 128, split: str = "seen") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A deterministic labelled batch: images (N,3,H,W), class labels into CLASSNAMES, captions."""
    g = torch.Generator().manual_seed(seed)
    scenes = sample_scenes(n, g, split)
    images = render(scenes, image_size, g)
    return images, scenes.labels, captions(scenes, g)
