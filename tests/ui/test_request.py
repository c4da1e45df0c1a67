"""One request, one attack: the page and `python -m demo.eval` build the same attack for the same settings,
and its step follows the budget unless one is given."""
import pytest
import torch

from demo.attacks import AttackSpec, build_attack
from demo.eval.__main__ import build_parser, config_from_args
from demo.eval.run import _attack
from demo.models.loading import load_model
from demo.pipeline import run_request
from demo.ui import handlers, parse
from demo.ui.handlers import AUTO_TRUE, NO_TARGET, OBLIVIOUS

LABELS = ["cat", "dog", "car", "tree"]


def page_request(model_key, eps, steps, attack_json="{}"):
    return parse.request(LABELS, AUTO_TRUE, NO_TARGET, model_key, "pgd", eps, steps, OBLIVIOUS, 0, attack_json)


def eval_attack(model_key, eps, steps):
    cfg = config_from_args(build_parser().parse_args(
        ["--model", model_key, "--attack", "pgd", "--eps", str(eps), "--steps", str(steps)]))
    return build_attack(AttackSpec(cfg.attack, cfg.params))


@pytest.mark.parametrize("eps", [1, 4, 8, 16])
def test_the_page_and_demo_eval_run_the_same_attack(model_key, image_file, eps):
    steps = 10
    page = build_attack(page_request(model_key, eps, steps).attack)
    cli = eval_attack(model_key, eps, steps)
    assert page == cli
    assert page.alpha == pytest.approx(2.5 * eps / 255 / steps)

    loaded = load_model(model_key)
    x = handlers.image_tensor(loaded, image_file)
    clf = loaded.classifier(LABELS)
    y = clf(x).argmax(1)
    seen_by_page = run_request(loaded, x, LABELS, page_request(model_key, eps, steps)).adversarial
    seen_by_eval, _ = _attack(cli, clf, x, y, None, 0)
    assert torch.equal(seen_by_page, seen_by_eval[0])


def test_a_given_step_is_kept_and_zero_means_automatic(model_key):
    assert page_request(model_key, 16, 10, '{"alpha": 2}').attack.resolved()["alpha"] == pytest.approx(2 / 255)
    assert page_request(model_key, 16, 10, '{"alpha": 0}').attack.resolved()["alpha"] == pytest.approx(4 / 255)
    assert build_attack(AttackSpec("pgd", {"eps": 32 / 255, "steps": 1})).alpha == pytest.approx(16 / 255)  # capped


def test_compare_json_reports_the_step_that_follows_the_budget(model_key, allowed, image_file):
    out = handlers.compare_json(image_file, "\n".join(LABELS), AUTO_TRUE, model_key, "pgd", 16, 10, NO_TARGET,
                                OBLIVIOUS, 0, "none", "none", "none", "{}", "{}", allowed=allowed)
    assert out["attack"]["display"]["alpha"] == pytest.approx(4)
    assert out["attack"]["params"]["alpha"] == pytest.approx(4 / 255)
