"""McNemar's exact test on paired per-image results."""
import pytest

from demo.eval import metrics as M


def pairs(only_a: int, only_b: int, both: int = 0, neither: int = 0):
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    return a, b


@pytest.mark.parametrize("only_a, only_b, p", [
    (0, 0, 1.0),
    (5, 0, 2 / 32),          # 2 * (1/2)^5
    (6, 0, 2 / 64),
    (7, 1, 2 * 9 / 256),     # 2 * (C(8,0) + C(8,1)) / 2^8
    (3, 3, 1.0),             # the tail passes 1/2: capped
    (10, 2, 2 * (1 + 12 + 66) / 4096),
])
def test_exact_p_values_computed_by_hand(only_a, only_b, p):
    a, b = pairs(only_a, only_b, both=40, neither=17)
    assert M.mcnemar_exact(a, b) == (only_a, only_b, pytest.approx(p))


def test_matches_scipy_binomial_test_when_available():
    stats = pytest.importorskip("scipy.stats")
    for only_a, only_b in ((9, 3), (20, 8), (1, 14), (30, 29)):
        expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert M.mcnemar_exact(*pairs(only_a, only_b, both=5))[2] == pytest.approx(expected)


def test_verdicts_at_five_percent():
    assert M.paired_verdict(*pairs(6, 0)) == "helps"          # p = 0.031
    assert M.paired_verdict(*pairs(0, 6)) == "worse"
    assert M.paired_verdict(*pairs(5, 0)) == "no better than"  # p = 0.0625
    assert M.paired_verdict(*pairs(10, 2, both=50)) == "helps"  # p = 0.039


def test_pairing_separates_rows_whose_intervals_overlap():
    # 30% vs 22% on 100 images: Wilson intervals overlap, but all 8 discordant images favour A.
    a, b = pairs(8, 0, both=22, neither=70)
    assert not M.significantly_above(sum(a) / 100, sum(b) / 100, 100)
    assert M.paired_verdict(a, b) == "helps"


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="same images"):
        M.mcnemar_exact([1, 0], [1])
