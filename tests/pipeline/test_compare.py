"""The comparison pipeline on the tiny model: columns, quantized adversarial image, costs, isolation."""
import json
import threading

import pytest
import torch

from demo import pipeline
from demo.defenses.base import Paradigm
from demo.pipeline import COLUMN_KEYS, InputError, run_comparison
from demo.registry import ATTACKS, DEFENSES

LABELS = ["cat", "dog", "car", "tree"]
EPS = 8 / 255


@pytest.fixture(scope="module")
def attack_name():
    import demo.attacks  # noqa: F401
    if not len(ATTACKS):
        pytest.skip("no attack registered")
    return "pgd" if "pgd" in ATTACKS else ATTACKS.names()[0]


def params_for(name, eps=EPS, steps=2):
    fields = {f.name for f in ATTACKS.get(name).params()}
    return {k: v for k, v in (("eps", eps), ("steps", steps)) if k in fields}


def cheap_defense(paradigm):
    """A registered defense of `paradigm` that runs on any model, preferring cheap input transforms."""
    import demo.defenses  # noqa: F401
    for name in ("bit_depth", "jpeg", "median"):
        if name in DEFENSES and DEFENSES.get(name).paradigm == paradigm:
            return name
    return "none"


@pytest.fixture()
def image(tiny_model):
    s = tiny_model.image_size
    return torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(3))


def state_bytes(model):
    return {k: v.clone() for k, v in model.clip.state_dict().items()}


def test_five_columns_and_exact_adversarial(tiny_model, image, attack_name):
    free = cheap_defense(Paradigm.TRAINING_FREE)
    before = state_bytes(tiny_model)
    result = run_comparison(tiny_model, image, LABELS, None, attack_name, params_for(attack_name),
                            defenses={"training-free": (free, {})}, seed=1)
    assert [c.key for c in result.columns] == list(COLUMN_KEYS)
    adv = result.adversarial
    assert torch.equal(torch.round(adv * 255) / 255, adv), "the adversarial image must be on the uint8 grid"
    if ATTACKS.get(attack_name).norm == "linf":
        assert float((adv - result.clean).abs().max()) <= EPS + 1e-6
    clf = tiny_model.classifier(LABELS)
    with torch.no_grad():
        recomputed = clf(adv[None]).softmax(-1)[0]
    assert torch.allclose(result.column("attacked").probs, recomputed, atol=1e-6)
    assert result.true_label == int(result.column("clean").probs.argmax())
    for column in result.columns:
        assert column.image.shape[0] == 3 and len(column.top) == 4
        assert abs(sum(p for _, p in column.top) - 1) < 1e-4
        assert column.ms >= 0
    if free != "none":
        assert result.column("training-free").input_changed
    names = [s.name for s in result.stages]
    assert names[0] == "clean inference" and names[1].startswith("attack")
    assert result.stages[1].grad > 0 or attack_name == "fgsm"
    json.dumps(result.to_dict())
    after = state_bytes(tiny_model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_same_seed_same_result(tiny_model, image, attack_name):
    runs = [run_comparison(tiny_model, image, LABELS, 2, attack_name, params_for(attack_name), seed=5)
            for _ in range(2)]
    assert torch.equal(runs[0].adversarial, runs[1].adversarial)
    assert torch.equal(runs[0].column("attacked").probs, runs[1].column("attacked").probs)


def test_adaptive_attacks_each_defense(tiny_model, image, attack_name):
    free = cheap_defense(Paradigm.TRAINING_FREE)
    if free == "none":
        pytest.skip("no input-transform defense registered")
    result = run_comparison(tiny_model, image, LABELS, None, attack_name, params_for(attack_name),
                            defenses={Paradigm.TRAINING_FREE: (free, {})}, adaptive=True)
    column = result.column("training-free")
    assert column.attack_stage is not None and column.attack_stage.name.startswith("attack through")
    assert result.column("test-time").attack_stage is None  # "none" reuses the oblivious attack
    assert any(s.name.startswith("attack through") for s in result.stages)


def test_attack_only(tiny_model, image, attack_name):
    result = run_comparison(tiny_model, image, LABELS, None, attack_name, params_for(attack_name), defenses=None)
    assert [c.key for c in result.columns] == ["clean", "attacked"]


def test_progress_reaches_one(tiny_model, image, attack_name):
    seen = []
    run_comparison(tiny_model, image, LABELS, None, attack_name, params_for(attack_name),
                   progress=lambda f, d: seen.append(f))
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
    assert seen == sorted(seen)


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": []}, "No labels"),
    ({"labels": ["cat"]}, "at least two"),
    ({"labels": ["cat", "dog", "cat"]}, "Duplicate"),
    ({"true_label": 9}, "true label"),
    ({"target": 1, "true_label": 1}, "target label"),
    ({"attack_params": {"eps": 1.0}}, "out of range"),
    ({"defenses": {"training-time": ("no-such", {})}}, "Unknown defense"),
    ({"defenses": {"sideways": ("none", {})}}, "Unknown paradigm"),
])
def test_bad_requests(tiny_model, image, attack_name, kwargs, message):
    args = {"labels": LABELS, "true_label": None, "attack_params": params_for(attack_name), "target": None,
            "defenses": None}
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        run_comparison(tiny_model, image, args["labels"], args["true_label"], attack_name, args["attack_params"],
                       args["target"], args["defenses"])


def test_bad_images(tiny_model, attack_name):
    for bad in (torch.rand(3, 32, 32), torch.rand(1, 1, 32, 32), torch.full((1, 3, 8, 8), 2.0)):
        with pytest.raises(InputError):
            run_comparison(tiny_model, bad, LABELS, None, attack_name, params_for(attack_name))


def test_concurrent_requests_do_not_interfere(tiny_model, attack_name):
    """Two requests at once get exactly what they get alone."""
    s = tiny_model.image_size
    jobs = [(torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(i)), labels, seed)
            for i, (labels, seed) in enumerate([(LABELS, 0), (["red", "green", "blue"], 7)])]
    alone = [run_comparison(tiny_model, x, lab, None, attack_name, params_for(attack_name), seed=sd)
             for x, lab, sd in jobs]
    together = [None, None]

    def run(i):
        x, lab, sd = jobs[i]
        together[i] = run_comparison(tiny_model, x, lab, None, attack_name, params_for(attack_name), seed=sd)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        assert torch.equal(a.adversarial, b.adversarial)
        assert a.labels == b.labels
        assert torch.allclose(a.column("attacked").probs, b.column("attacked").probs, atol=1e-6)


def test_classify_and_defend_only(tiny_model, image):
    column = pipeline.classify(tiny_model, image, LABELS)
    assert column.correct and column.key == "clean"
    columns, stages, true_label = pipeline.run_defenses(tiny_model, image, LABELS, None, {}, reference=image)
    assert [c.key for c in columns] == ["attacked", "training-time", "test-time", "training-free", "stacked"]
    assert true_label == column.pred and stages[0].forward == 1


def test_robustness_curve(tiny_model, image, attack_name):
    if not any(f.name == "eps" for f in ATTACKS.get(attack_name).params()):
        pytest.skip("attack has no eps")
    free = cheap_defense(Paradigm.TRAINING_FREE)
    curve = pipeline.robustness_curve(tiny_model, image, LABELS, None, attack_name, {"steps": 2},
                                      [4 / 255, 0.0, 2 / 255], {"training-free": (free, {})})
    assert curve.eps == [0.0, 2 / 255, 4 / 255]
    clean = pipeline.classify(tiny_model, image, LABELS)
    first = curve.series[pipeline.UNDEFENDED][0]
    assert first.correct and abs(first.true_prob - float(clean.probs[clean.pred])) < 1e-5
    expected = 2 if free != "none" else 1
    assert len(curve.series) == expected and all(len(v) == 3 for v in curve.series.values())
    json.dumps(curve.to_dict())
    with pytest.raises(InputError, match="between 0"):
        pipeline.robustness_curve(tiny_model, image, LABELS, None, attack_name, {}, [-1 / 255])
    with pytest.raises(InputError, match="at least one"):
        pipeline.robustness_curve(tiny_model, image, LABELS, None, attack_name, {}, [])


def test_the_stacked_column_is_the_chosen_defenses_in_one_pipeline_and_is_priced(tiny_model, image, attack_name):
    from demo.pipeline import budget
    from demo.pipeline.compare import check_defenses
    from demo.pipeline.stacked import with_stack

    chosen = check_defenses({"training-time": ("apt", {}), "test-time": ("tpt", {"views": 4}),
                             "training-free": ("bit_depth", {})}) if "apt" in DEFENSES else None
    if chosen is not None:  # a learned prompt cannot be a stack's training-time part: left out, and said so
        stack = with_stack(chosen)[Paradigm.STACKED]
        assert (stack.training_time, stack.test_time, stack.training_free) == ("none", "tpt", "bit_depth")
    nothing = with_stack(check_defenses({}))
    assert nothing[Paradigm.STACKED].name == "none" and with_stack({}) == {}
    defenses = {"test-time": ("none", {}), "training-free": ("bit_depth", {})}
    result = run_comparison(tiny_model, image, LABELS, None, attack_name, params_for(attack_name),
                            defenses=defenses, adaptive=True, seed=1)
    stacked = result.column("stacked")
    assert stacked.defense == "stack" and stacked.changed["parts"]["training_free"] == "bit_depth"
    assert stacked.attack_stage is not None and stacked.attack_stage.grad > 0
    attack = pipeline.inputs.make_attack(attack_name, params_for(attack_name))
    alone = list(check_defenses(defenses).values())
    assert budget.comparison_passes(attack, list(with_stack(check_defenses(defenses)).values()), True).total > \
        budget.comparison_passes(attack, alone, True).total
