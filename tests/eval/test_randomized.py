"""The protocol for randomized defenses: EOT on the loss, the best point kept, scoring on fresh draws."""
import pytest
import torch
import torch.nn as nn

from demo.eval import randomized as R
from demo.eval.run import EvalError

pytestmark = pytest.mark.usefixtures("one_thread")


class Scheduled(nn.Module):
    """Two-class logits [s + w.x, 0]: s follows a schedule, one value per call, so the loss of each call
    is known; w.x gives every step a gradient (towards lower w.x, i.e. a lower first logit)."""

    def __init__(self, schedule, shape):
        super().__init__()
        self.schedule, self.calls = list(schedule), 0
        self.w = torch.linspace(-1, 1, int(torch.tensor(shape).prod())).view(shape)

    def forward(self, x):
        s = self.schedule[min(self.calls, len(self.schedule) - 1)]
        self.calls += 1
        first = s + (x * self.w).flatten(1).sum(1)
        return torch.stack([first, torch.zeros_like(first)], 1)


def iterates(x, eps, alpha, steps, seed, w):
    g = torch.Generator().manual_seed(seed)
    adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    out = [adv]
    for _ in range(steps):
        adv = torch.min(torch.max(adv - alpha * w.sign(), x - eps), x + eps).clamp(0, 1)
        out.append(adv)
    return out


def test_keeps_the_highest_expected_loss_iterate_not_the_last_nor_the_clean_image():
    x, y = torch.full((1, 3, 4, 4), 0.5), torch.tensor([0])
    # label 0: the loss is high when the first logit is low; call 2 (iterate 2) has by far the lowest
    module = Scheduled([3, 3, -6, 3, 3, 3], x.shape[1:])
    best, loss, curve = R.eot_pgd(module, x, y, 0.1, 0.01, 4, 1, torch.Generator().manual_seed(7))
    path = iterates(x, 0.1, 0.01, 4, 7, module.w)
    assert torch.allclose(best, path[2]) and not torch.allclose(best, path[-1]) and not torch.equal(best, x)
    assert len(curve) == 5 and max(curve) == pytest.approx(float(loss))
    assert module.calls == 5  # 4 gradient steps and the last iterate scored


def test_eot_averages_the_loss_over_draws_per_step():
    x, y = torch.full((1, 3, 4, 4), 0.5), torch.tensor([0])
    module = Scheduled([3, -6] * 10, x.shape[1:])
    _, loss, curve = R.eot_pgd(module, x, y, 0.1, 0.01, 2, 2, torch.Generator().manual_seed(7))
    assert module.calls == 6  # 2 draws at each of 3 iterates
    one = nn.functional.cross_entropy
    lo = one(torch.tensor([[3.0, 0.0]]), y)  # the mean over a low- and a high-loss draw, not either one
    hi = one(torch.tensor([[-6.0, 0.0]]), y)
    assert lo < float(loss) < hi


def test_random_start_is_a_candidate_even_when_every_step_lowers_the_loss():
    x, y = torch.full((2, 3, 4, 4), 0.5), torch.tensor([0, 0])
    module = Scheduled([-6, 3, 3, 3], x.shape[1:])
    best, _, _ = R.eot_pgd(module, x, y, 0.1, 0.01, 3, 1, torch.Generator().manual_seed(1))
    start = iterates(x, 0.1, 0.01, 3, 1, module.w)[0]
    assert torch.allclose(best, start) and not torch.equal(best, x)


def cfg(tiny_dir, **kw):
    base = dict(model=f"local-dir:{tiny_dir}", defense="random_resize_pad", eps=8 / 255, steps=2, eot=2,
                score_draws=3, n=4, batch_size=2, transfer=True, device="cpu")
    return R.ProtocolConfig(**{**base, **kw})


def test_run_scores_each_image_on_fresh_draws_and_shards_merge_to_the_whole(tiny_dir):
    whole = R.evaluate(cfg(tiny_dir))
    assert len(whole["adaptive_right"]) == 4 and all(0 <= r <= 3 for r in whole["adaptive_right"])
    assert len(whole["transfer_right"]) == 4 and len(whole["clean_right"]) == 4
    parts = [R.evaluate(cfg(tiny_dir, start=s, n=2)) for s in (0, 2)]
    merged = R.merge(parts[::-1], command="cmd")
    for key in ("labels", "clean_right", "adaptive_right", "transfer_right", "best_loss"):
        assert merged[key] == pytest.approx(whole[key]), key
    s = R.summary(merged)
    assert s["adaptive"]["all"] <= s["adaptive"]["mean"] and s["n"] == 4 and s["eot"] == 2


def test_gaps_and_other_settings_do_not_merge(tiny_dir):
    a = R.evaluate(cfg(tiny_dir, n=2, transfer=False, clean=False))
    c = R.evaluate(cfg(tiny_dir, start=2, n=2, eot=1, transfer=False, clean=False))
    with pytest.raises(EvalError, match="does not continue"):
        R.merge([a, c])


def test_bad_shard_start_and_counts_are_refused(tiny_dir):
    with pytest.raises(EvalError, match="multiple"):
        R.evaluate(cfg(tiny_dir, start=1))
    with pytest.raises(EvalError, match="at least 1"):
        R.evaluate(cfg(tiny_dir, eot=0))


def test_single_draw_module_asks_the_defense_for_one_draw_per_call(teaching_model):
    from demo.defenses import DEFENSES

    clf = teaching_model.classifier(["a", "b"])
    module = R.single_draw_module(DEFENSES.create("random_resize_pad", eot_draws=8), clf, 0)
    assert module.defense.eot_draws == 1


def test_transfer_from_another_setting_of_the_defense(tiny_dir):
    plain = R.evaluate(cfg(tiny_dir, attack=False, clean=False, n=2))
    other = R.evaluate(cfg(tiny_dir, attack=False, clean=False, n=2, surrogate={"max_scale": 1.3}))
    assert "adaptive_right" not in other and len(other["transfer_right"]) == 2
    assert other["surrogate"] == {"max_scale": 1.3} and plain["surrogate"] is None
    with pytest.raises(EvalError, match="does not continue"):
        R.merge([plain, {**other, "data": {**other["data"], "start": 2}}])


def test_command_line_writes_the_result(tiny_dir, tmp_path, capsys):
    out = tmp_path / "r"
    R.main(["--model", f"local-dir:{tiny_dir}", "--defense", "random_resize_pad", "--steps", "1", "--n", "2",
            "--batch-size", "2", "--score-draws", "2", "--option", "max_scale=1.2", "--device", "cpu", "--out", str(out)])
    text = capsys.readouterr().out
    assert "adaptive: mean over 2 draws" in text and (tmp_path / "r.json").is_file()
    with pytest.raises(SystemExit):
        R.main(["--model", f"local-dir:{tiny_dir}", "--defense", "random_resize_pad", "--option", "max_scale"])


def test_apgd_checkpoints_follow_the_paper():
    from demo.eval.randomized_apgd import checkpoints

    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_loss_is_scale_invariant_and_negative_when_right():
    from demo.eval.randomized_apgd import dlr_loss

    z, y = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]]), torch.tensor([0, 0])
    assert dlr_loss(z, y)[0] == pytest.approx(-(3 - 1) / (3 - 0)) and dlr_loss(z, y)[1] > 0
    assert torch.allclose(dlr_loss(5 * z, y), dlr_loss(z, y))


def test_apgd_keeps_its_best_point_and_halves_its_step(tiny_dir):
    from demo.eval.randomized_apgd import eot_apgd

    x, y = torch.full((1, 3, 4, 4), 0.5), torch.tensor([0])
    module = Scheduled([3.0] * 6 + [-6.0] + [3.0] * 40, x.shape[1:])
    best, loss, curve = eot_apgd(module, x, y, 0.1, 20, 1, torch.Generator().manual_seed(0))
    assert len(curve) == 21 and float(loss) == pytest.approx(max(curve)) and not torch.equal(best, x)
    assert (best - x).abs().max() <= 0.1 + 1e-6


def test_apgd_run_takes_the_worse_of_ce_and_dlr_per_image(tiny_dir):
    res = R.evaluate(cfg(tiny_dir, method="apgd", steps=3, transfer=False, n=2))
    worse = [min(a, b) for a, b in zip(res["apgd_ce_right"], res["apgd_dlr_right"])]
    assert res["adaptive_right"] == worse and "APGD" in res["attack"]["title"]
