"""The sanity checks run, and report a broken attack as a failed check instead of hiding it."""
from __future__ import annotations

import torch

from demo.eval import sanity


def test_wrong_sign_negates_exactly_the_input_gradient(teaching_model):
    clf = teaching_model.classifier(["red circle", "blue square", "green star"])
    x = torch.rand(2, 3, teaching_model.image_size, teaching_model.image_size, requires_grad=True)
    g1, = torch.autograd.grad(clf(x)[:, 0].sum(), x)
    g2, = torch.autograd.grad(sanity.WrongSign(clf)(x)[:, 0].sum(), x)
    assert torch.allclose(g1, -g2)


def test_checks_pass_on_the_real_attack_and_fail_on_a_broken_one(monkeypatch):
    good = sanity.run_checks(n=8)
    names = {(c["check"], c["model"]) for c in good["checks"]}
    assert len(names) == 9 and all(c["passed"] for c in good["checks"]), sanity.markdown(good)
    assert "| near 0 at 32/255 | undefended | passed |" in sanity.markdown(good)

    real = sanity._pgd

    def broken(model, x, y, eps, steps=10, seed=0):  # an attack that gives up at large budgets
        return x if eps >= 8 else real(model, x, y, eps, steps, seed)

    monkeypatch.setattr(sanity, "_pgd", broken)
    monkeypatch.setattr(sanity, "EPS_SWEEP", (0, 4, 8, 32))
    bad = {(c["check"], c["model"]): c["passed"] for c in sanity.run_checks(n=8, robust=None)["checks"]}
    assert not bad[("near 0 at 32/255", "undefended")]
    assert not bad[("accuracy does not rise with eps", "undefended")]
    assert "**FAILED**" in sanity.markdown({"n": 12, "checks": [{"check": "x", "model": "m", "passed": False,
                                                                   "values": {"a": 0.5}}]})
