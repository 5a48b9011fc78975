"""stats: Wilson and bootstrap intervals, McNemar's exact test, paired comparisons, checked against
published values and against independent computations written differently here."""

from __future__ import annotations

import itertools
import math
import random
from statistics import NormalDist

import pytest

from seqdistill import stats

Z = NormalDist().inv_cdf(0.975)


def score_test_interval(correct: int, total: int) -> tuple[float, float]:
    """The Wilson interval as what it is: the p0 the score test does not reject, found by bisection."""
    phat = correct / total

    def rejects(p0: float) -> bool:
        return abs(phat - p0) > Z * math.sqrt(p0 * (1 - p0) / total)

    def boundary(inside: float, outside: float) -> float:
        for _ in range(200):
            mid = (inside + outside) / 2
            inside, outside = (inside, mid) if rejects(mid) else (mid, outside)
        return inside

    low = 0.0 if correct == 0 else boundary(phat, 0.0)
    high = 1.0 if correct == total else boundary(phat, 1.0)
    return low, high


@pytest.mark.parametrize(
    ("correct", "total", "published"),
    [
        (81, 263, (0.2553, 0.3662)),  # Newcombe 1998 (Stat Med 17:857), Table II, method 3
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
        (13, 16, (0.5699, 0.9341)),  # Fagerland, Lydersen & Laake 2017, chapter 2
        (62, 100, (0.5221, 0.7090)),  # the brief's hand-worked example
    ],
)
def test_wilson_matches_published_values_and_the_inverted_score_test(correct, total, published):
    low, high = stats.wilson_interval(correct, total)
    assert (round(low, 4), round(high, 4)) == published
    ref_low, ref_high = score_test_interval(correct, total)
    assert low == pytest.approx(ref_low, abs=1e-9) and high == pytest.approx(ref_high, abs=1e-9)


def test_wilson_at_the_edges_stays_inside_zero_one():
    assert stats.wilson_interval(100, 100) == (pytest.approx(0.9630, abs=1e-4), 1.0)
    assert stats.wilson_interval(0, 1) == (0.0, pytest.approx(0.7935, abs=1e-4))
    with pytest.raises(ValueError):
        stats.wilson_interval(0, 0)


def brute_force_mcnemar(b: int, c: int) -> float:
    """Every way the b + c discordant pairs could have split at 1/2: the share as lopsided as observed."""
    n, observed = b + c, min(b, c)
    splits = list(itertools.product((0, 1), repeat=n))
    return sum(min(sum(s), n - sum(s)) <= observed for s in splits) / len(splits) if n else 1.0


@pytest.mark.parametrize(("b", "c"), [(1, 6), (0, 0), (0, 1), (3, 3), (2, 9), (5, 7), (0, 12)])
def test_mcnemar_exact_equals_counting_every_split(b, c):
    assert stats.mcnemar_exact(b, c) == pytest.approx(brute_force_mcnemar(b, c), abs=1e-12)
    assert stats.mcnemar_exact(b, c) == stats.mcnemar_exact(c, b)


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(1, 6) == 0.125
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert round(stats.mcnemar_exact(3, 13), 5) == 0.02127  # exact binomial test 13 of 16 (Fagerland ch. 2)
    assert round(stats.mcnemar_exact(6, 16), 4) == 0.0525  # Cavo et al. 2012's table: 6 vs 16 discordant
    # thousands of discordant pairs: exact integers, no overflow, close to the normal approximation
    z = (abs(1000 - 1200) - 1) / math.sqrt(2200)
    assert stats.mcnemar_exact(1000, 1200) == pytest.approx(2 * NormalDist().cdf(-z), rel=0.05)


def test_newcombe_paired_interval_published_and_reduces_to_square_and_add():
    low, high = stats.newcombe_paired_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)  # Fagerland et al. 2017, chapter 8
    # a table with phi = 0 (no correlation): Newcombe's unpaired square-and-add of two Wilson intervals
    both, a_only, b_only, neither = 10, 10, 10, 10
    pa = pb = 0.5
    la, ua = stats.wilson_interval(20, 40)
    lb, ub = stats.wilson_interval(20, 40)
    low, high = stats.newcombe_paired_interval(both, a_only, b_only, neither)
    assert low == pytest.approx(-math.hypot(pa - la, ub - pb)) and high == pytest.approx(math.hypot(pb - lb, ua - pa))


def test_newcombe_with_no_discordant_pairs_is_not_a_point():
    low, high = stats.newcombe_paired_interval(60, 0, 0, 40)
    assert low < 0 < high and high - low > 0.02


def prompts(values: list[tuple[int, int]], prefix: str = "p") -> dict[str, tuple[int, int]]:
    return {f"{prefix}{i:04d}": v for i, v in enumerate(values)}


def test_accuracy_with_one_sample_per_prompt_is_wilson():
    acc = stats.accuracy(prompts([(1, 1)] * 62 + [(0, 1)] * 38))
    assert (acc.correct, acc.total, acc.prompts, acc.method) == (62, 100, 100, "wilson")
    assert acc.value == 0.62 and (acc.ci_low, acc.ci_high) == stats.wilson_interval(62, 100)
    assert str(acc) == "62.0% [52.2, 70.9]"


def test_accuracy_edge_cases():
    empty = stats.accuracy({})
    assert (empty.value, empty.ci_low, empty.ci_high, empty.total) == (None, None, None, 0)
    assert stats.accuracy({"p": (0, 0)}).value is None  # a prompt with no scored sample is no evidence
    assert str(empty) == "-"
    single = stats.accuracy({"p": (1, 1)})
    assert (single.value, single.ci_high, single.method) == (1.0, 1.0, "wilson") and single.ci_low < 0.3
    one_prompt_many = stats.accuracy({"p": (3, 4)})  # no other prompt to resample: Wilson over its samples
    assert one_prompt_many.method == "wilson" and (one_prompt_many.ci_low, one_prompt_many.ci_high) == (
        stats.wilson_interval(3, 4)
    )
    all_right = stats.accuracy(prompts([(4, 4)] * 30))
    assert (all_right.value, all_right.ci_low, all_right.ci_high) == (1.0, 1.0, 1.0)
    assert all_right.method == "bootstrap-prompts"


def varied_prompts(count: int, seed: int = 1, n: int = 4) -> dict[str, tuple[int, int]]:
    rng = random.Random(seed)
    return prompts([(rng.randint(0, n), n) for _ in range(count)])


def test_bootstrap_over_prompts_contains_the_estimate_shrinks_and_is_seeded():
    small = varied_prompts(25)
    acc = stats.accuracy(small)
    assert acc.method == "bootstrap-prompts" and acc.prompts == 25 and acc.total == 100
    assert acc.ci_low < acc.value < acc.ci_high
    assert stats.accuracy(small) == acc  # same data, same seed: the same interval
    other = stats.accuracy(small, seed=1)
    assert other != acc and other.ci_low == pytest.approx(acc.ci_low, abs=0.02)
    # the same prompts four times over: the interval is about half as wide (1/sqrt(4))
    big = stats.accuracy({f"{k}-{copy}": v for k, v in small.items() for copy in range(4)})
    assert big.value == acc.value
    ratio = (big.ci_high - big.ci_low) / (acc.ci_high - acc.ci_low)
    assert 0.4 < ratio < 0.6


def test_bootstrap_width_matches_the_standard_error_of_per_prompt_means():
    scores = varied_prompts(200, seed=3)
    acc = stats.accuracy(scores)
    means = [c / t for c, t in scores.values()]
    mean = sum(means) / len(means)
    se = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means))
    assert (acc.ci_high - acc.ci_low) == pytest.approx(2 * Z * se, rel=0.1)


def test_bootstrap_over_prompts_covers_where_an_interval_over_samples_does_not():
    """Prompts of very different difficulty, 8 samples each: samples of a prompt are not independent.

    Over 200 simulated evals (true accuracy 0.5), the bootstrap over prompts covers the truth about 95% of the
    time; a Wilson interval that treats the 320 samples as independent is far too narrow.
    """
    rng = random.Random(7)
    covered_bootstrap = covered_naive = 0
    for sim in range(200):
        difficulty = [rng.choice((0.05, 0.5, 0.95)) for _ in range(40)]
        scores = prompts([(sum(rng.random() < q for _ in range(8)), 8) for q in difficulty])
        acc = stats.accuracy(scores, resamples=1000, seed=sim)
        covered_bootstrap += acc.ci_low <= 0.5 <= acc.ci_high
        low, high = stats.wilson_interval(acc.correct, acc.total)
        covered_naive += low <= 0.5 <= high
    assert covered_bootstrap / 200 >= 0.9
    assert covered_naive / 200 <= 0.8


def test_compare_one_sample_per_prompt_is_newcombe_and_mcnemar():
    # 100 prompts: 40 both right, 22 only a, 8 only b, 30 neither; plus 3 prompts only a has, 1 only b has
    a = prompts([(1, 1)] * 40 + [(1, 1)] * 22 + [(0, 1)] * 8 + [(0, 1)] * 30)
    b = prompts([(1, 1)] * 40 + [(0, 1)] * 22 + [(1, 1)] * 8 + [(0, 1)] * 30)
    a.update({"only-a-1": (1, 1), "only-a-2": (0, 1), "only-a-3": (1, 1)})
    b["only-b"] = (1, 1)
    c = stats.compare(a, b, names=("after", "before"))
    assert (c.a, c.b, c.prompts, c.unpaired, c.a_better, c.b_better) == ("after", "before", 100, 4, 22, 8)
    assert (c.accuracy_a, c.accuracy_b) == (0.62, 0.48) and c.difference == pytest.approx(0.14)
    assert (c.ci_low, c.ci_high) == stats.newcombe_paired_interval(40, 22, 8, 30)
    assert c.ci_low < c.difference < c.ci_high
    assert c.p_value == stats.mcnemar_exact(22, 8) and c.p_value < 0.05
    assert (c.ci_method, c.test) == ("newcombe-paired", "mcnemar-exact")
    assert str(c).startswith("+14.0 pts [") and "p = 0.0161" in str(c) and "22 vs 8" in str(c)
    back = stats.compare(b, a)
    assert back.difference == pytest.approx(-c.difference) and back.p_value == c.p_value
    assert (back.ci_low, back.ci_high) == (pytest.approx(-c.ci_high), pytest.approx(-c.ci_low))


def test_compare_with_nothing_in_common_or_nothing_different():
    none = stats.compare({"x": (1, 1)}, {"y": (1, 1)})
    assert (none.prompts, none.unpaired, none.difference, none.p_value) == (0, 2, None, None)
    assert str(none) == "no prompts in common"
    same = varied_prompts(30)
    tie = stats.compare(same, dict(same))
    assert (tie.difference, tie.ci_low, tie.ci_high, tie.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (tie.a_better, tie.b_better, tie.test) == (0, 0, "sign-flip")


def test_sign_flip_test_on_binary_pairs_is_mcnemar():
    """With one sample per prompt the randomisation test asks McNemar's question: compare it by Monte Carlo."""
    a = [1] * 13 + [0] * 3 + [1] * 50 + [0] * 34  # 13 only a, 3 only b, 50 both, 34 neither
    b = [0] * 13 + [1] * 3 + [1] * 50 + [0] * 34
    ones = [1] * len(a)
    p = stats.sign_flip_p(a, ones, b, ones, resamples=40_000, seed=0)
    exact = stats.mcnemar_exact(13, 3)
    assert p == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 40_000))


def test_compare_several_samples_per_prompt_is_a_paired_bootstrap():
    rng = random.Random(5)
    before = varied_prompts(60, seed=11)
    after = {k: (min(4, c + rng.choice((0, 1, 1, 2))), t) for k, (c, t) in before.items()}  # mostly better
    c = stats.compare(after, before, names=("after", "before"))
    assert (c.ci_method, c.test, c.prompts) == ("bootstrap-prompts", "sign-flip", 60)
    assert 0 < c.ci_low < c.difference < c.ci_high
    assert c.p_value < 0.001 and c.p_value >= 1 / (1 + stats.RESAMPLES)
    assert c.a_better > 30 and c.b_better == 0
    assert stats.compare(after, before, names=("after", "before")) == c  # seeded
    # paired beats unpaired: the interval of the difference is narrower than either accuracy's own interval
    assert c.ci_high - c.ci_low < stats.accuracy(before).ci_high - stats.accuracy(before).ci_low
    noise = {k: (rng.randint(0, 4), 4) for k in before}
    assert stats.compare(noise, before).p_value > 0.01  # unrelated, same difficulty: no evidence either way
    one = stats.compare({"p": (3, 4)}, {"p": (1, 4)})
    assert (one.difference, one.ci_low, one.p_value) == (0.5, None, 1.0)


def test_comparison_to_dict_is_json_ready():
    import json

    c = stats.compare(prompts([(1, 1), (0, 1)]), prompts([(0, 1), (0, 1)]), names=("x", "y"))
    assert json.loads(json.dumps(c.to_dict()))["a_better"] == 1


def test_comparison_reads_as_one_line():
    c = stats.compare(prompts([(1, 1)] * 30), prompts([(0, 1)] * 30))
    # every pair discordant one way: phi is 0, so the lower bound is 1 - hypot of the two Wilson half-widths
    low = 1 - math.hypot(1 - stats.wilson_interval(30, 30)[0], stats.wilson_interval(0, 30)[1])
    assert c.ci_low == pytest.approx(low)
    assert str(c) == f"+100.0 pts [{100 * low:+.1f}, +100.0], p < 0.0001 (30 vs 0 prompts differ)"
