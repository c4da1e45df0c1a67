"""Adaptive variants of the transforms: a differentiable JPEG and the median's own gradient."""
import pytest
import torch

from demo import world
from demo.defenses import DEFENSES
from demo.defenses.training_free.jpeg import differentiable_jpeg, jpeg_roundtrip, soft_round
from demo.defenses.training_free.median import median_filter

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    return world.make_batch(4, 5000, 128, "seen")[0]  # the teaching model's size


def test_soft_round_rounds_at_integers_and_has_a_gradient_between():
    x = torch.tensor([-2.0, 0.0, 3.0, 0.3, 1.6], requires_grad=True)
    y = soft_round(x)
    assert y[:3].tolist() == [-2.0, 0.0, 3.0]
    y.sum().backward()
    assert x.grad[3] == pytest.approx(3 * 0.3 ** 2) and x.grad[4] == pytest.approx(3 * 0.4 ** 2)


@pytest.mark.parametrize("quality", [50, 75, 90])
def test_differentiable_jpeg_is_close_to_the_real_one(images, quality):
    real, approx = jpeg_roundtrip(images, quality), differentiable_jpeg(images, quality)
    # far closer to the compressed image than the compression is to its input
    assert (approx - real).abs().mean() < 0.3 * (real - images).abs().mean()
    assert (approx - real).abs().mean() < 2.5 / 255


def test_jpeg_variant_sees_the_real_compression_and_a_gradient_unlike_bpda(teaching_model, images):
    clf = teaching_model.classifier(list(world.CLASSNAMES), (world.EVAL_TEMPLATE,))
    x = images.clone()
    jpeg = DEFENSES.create("jpeg")
    (name, variant), = jpeg.adaptive_variants().items()
    assert name == "differentiable JPEG"
    grads = {}
    for key, d in (("bpda", jpeg), ("diff", variant)):
        xi = x.clone().requires_grad_(True)
        logits = d.as_module(clf, 0)(xi)
        assert torch.allclose(logits, clf(jpeg_roundtrip(x, 75)), atol=1e-4)  # forward: the real JPEG
        logits.logsumexp(1).sum().backward()
        grads[key] = xi.grad
    assert grads["diff"].abs().sum() > 0
    cos = torch.nn.functional.cosine_similarity(grads["diff"].flatten(), grads["bpda"].flatten(), dim=0)
    assert cos < 0.99  # the approximation's gradient is not the identity's


@pytest.mark.parametrize("kernel", [3, 5])
def test_median_gradient_flows_to_the_selected_pixel(kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64).requires_grad_(True)  # no ties
    out = median_filter(x, kernel)
    out.sum().backward()
    # every output pixel sends exactly one unit of gradient to one input pixel
    assert x.grad.sum().item() == pytest.approx(out.numel())
    assert torch.equal(x.grad, x.grad.round()) and x.grad.min() >= 0
    # one output pixel: its whole gradient lands on the input pixel holding the median value
    x.grad = None
    median_filter(x, kernel)[1, 2, 5, 6].backward()
    (idx,) = x.grad.flatten().nonzero()
    assert x.flatten()[idx] == median_filter(x, kernel)[1, 2, 5, 6]


def test_median_variant_is_the_exact_gradient_path(teaching_model, images):
    clf = teaching_model.classifier(list(world.CLASSNAMES), (world.EVAL_TEMPLATE,))
    median = DEFENSES.create("median")
    (name, variant), = median.adaptive_variants().items()
    assert name == "median's own gradient" and variant.exact_gradient and not median.exact_gradient
    x = images.clone().requires_grad_(True)
    variant.as_module(clf, 0)(x).logsumexp(1).sum().backward()
    assert x.grad.abs().sum() > 0
