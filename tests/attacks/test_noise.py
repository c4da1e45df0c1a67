"""The random-noise baseline: shape, budget, seeding, bounds, and the Gaussian kind's L2 norm."""
from __future__ import annotations

import math

import pytest
import torch

from demo.attacks import ATTACKS, AttackError
from demo.attacks.noise import noise_delta

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def labels(tiny_clf, tiny_images):
    with torch.no_grad():
        return tiny_clf(tiny_images).argmax(1)


@pytest.fixture()
def mid_images():
    """Images away from 0 and 1, so that clipping does not shrink the noise."""
    g = torch.Generator().manual_seed(1)
    return torch.round((0.25 + 0.5 * torch.rand(3, 3, 32, 32, generator=g)) * 255) / 255


def test_registered_and_untargeted():
    assert "noise" in ATTACKS
    assert not ATTACKS.get("noise").supports_targeted


@pytest.mark.parametrize("eps", [1 / 255, 4 / 255, 16 / 255])
def test_corners_use_the_whole_budget(eps, tiny_clf, mid_images, labels):
    res = ATTACKS.create("noise", eps=eps)(tiny_clf, mid_images, labels, seed=0)
    assert res.adv_images.shape == mid_images.shape
    assert float(res.adv_images.min()) >= 0 and float(res.adv_images.max()) <= 1
    # Every pixel and channel sits at a corner of the ball: exactly +-eps after quantization.
    assert torch.allclose(res.delta.abs(), torch.full_like(res.delta, eps), atol=1e-6)
    signs = res.delta.sign()
    assert 0.4 < float((signs > 0).float().mean()) < 0.6, "corners must be drawn with both signs"


def test_gaussian_matches_the_corners_l2_norm(tiny_clf, mid_images, labels):
    eps = 8 / 255
    corners = ATTACKS.create("noise", eps=eps)(tiny_clf, mid_images, labels, seed=0)
    gauss = ATTACKS.create("noise", eps=eps, kind="gaussian")(tiny_clf, mid_images, labels, seed=0)
    expected = eps * math.sqrt(3 * 32 * 32)
    assert torch.allclose(corners.l2, torch.full_like(corners.l2, expected), rtol=1e-4)
    # Rounding to 8-bit levels moves the norm by a few percent at most at this size.
    assert torch.allclose(gauss.l2, torch.full_like(gauss.l2, expected), rtol=0.05)
    assert float(gauss.linf.max()) > eps, "Gaussian noise of that energy exceeds eps at some pixels"
    assert gauss.adv_images.shape == mid_images.shape
    assert float(gauss.adv_images.min()) >= 0 and float(gauss.adv_images.max()) <= 1


def test_noise_delta_exact_l2_before_quantization():
    g = torch.Generator().manual_seed(0)
    d = noise_delta((4, 3, 16, 16), 2 / 255, "gaussian", g)
    assert torch.allclose(d.flatten(1).norm(dim=1), torch.full((4,), 2 / 255 * math.sqrt(3 * 16 * 16)), rtol=1e-5)


def test_same_seed_same_noise_other_seed_other_noise(tiny_clf, tiny_images, labels):
    atk = ATTACKS.create("noise", eps=4 / 255)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = atk(tiny_clf, tiny_images, labels, seed=1).adv_images
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be used"
    b = atk(tiny_clf, tiny_images, labels, seed=1).adv_images
    c = atk(tiny_clf, tiny_images, labels, seed=2).adv_images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_reports_linear_gain_of_noise_and_of_the_sign_step(tiny_clf, mid_images, labels):
    res = ATTACKS.create("noise", eps=4 / 255)(tiny_clf, mid_images, labels, seed=0)
    h = res.history[-1]
    assert len(h["linear_gain_noise"]) == mid_images.shape[0]
    # The aimed step is the largest first-order gain of any perturbation in the L-inf ball.
    assert all(abs(n) <= s + 1e-6 for n, s in zip(h["linear_gain_noise"], h["linear_gain_sign"]))


def test_unknown_kind_rejected(tiny_clf, tiny_images, labels):
    with pytest.raises(AttackError, match="kind"):
        ATTACKS.create("noise", kind="uniform")(tiny_clf, tiny_images, labels)
