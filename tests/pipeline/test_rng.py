"""Every random draw of a request comes from the request's seed, never from torch's global generator:
a seeded comparison gives the same answer while another thread builds a model."""
import threading

import pytest
import torch

from demo.models import loading
from demo.models.rng import local_rng
from demo.pipeline import run_comparison

LABELS = ["cat", "dog", "car", "tree"]


@pytest.fixture()
def image(tiny_model):
    s = tiny_model.image_size
    return torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(3))


def test_local_draws_are_the_seeded_global_ones_and_leave_the_global_generator_alone():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected = (torch.rand(3), torch.empty(4).uniform_(-1, 1), torch.randn_like(torch.zeros(2)))
    before = torch.random.get_rng_state()
    with local_rng(7):
        got = (torch.rand(3), torch.empty(4).uniform_(-1, 1), torch.randn_like(torch.zeros(2)))
        layer = torch.nn.Linear(3, 2)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert torch.equal(torch.random.get_rng_state(), before)
    with local_rng(7):
        torch.rand(3), torch.empty(4).uniform_(-1, 1), torch.randn_like(torch.zeros(2))
        assert torch.equal(torch.nn.Linear(3, 2).weight, layer.weight)


def test_other_threads_keep_the_global_generator():
    drawn = []
    with local_rng(1):
        t = threading.Thread(target=lambda: drawn.append(torch.rand(2)))
        before = torch.random.get_rng_state()
        t.start()
        t.join()
    assert not torch.equal(torch.random.get_rng_state(), before)  # the other thread drew from the global one


@pytest.mark.parametrize("attack, params", [("pgd", {"eps": 8 / 255, "alpha": 1 / 255, "steps": 2}), ("apgd_ce", {"eps": 8 / 255, "steps": 3})])
def test_a_seeded_comparison_is_identical_while_a_model_is_built(tiny_model, image, attack, params):
    def run():
        return run_comparison(tiny_model, image, LABELS, None, attack, params, seed=0).adversarial

    reference = run()
    stop, built = threading.Event(), []

    def build():
        while not stop.is_set():  # what the warm-up or a visitor choosing another model does
            built.append(loading._build(tiny_model.spec, torch.device("cpu")))
            built.clear()

    builder = threading.Thread(target=build, daemon=True)
    builder.start()
    try:
        results = [run() for _ in range(6)]
    finally:
        stop.set()
        builder.join()
    assert all(torch.equal(r, reference) for r in results)
