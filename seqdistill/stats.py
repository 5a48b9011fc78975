"""Error bars for eval results: an accuracy with its 95% confidence interval, and paired comparisons.

An eval scores `n` samples for each of P prompts. What varies from one eval set to another is the
prompts, so every interval here treats the prompt as the unit:
- `accuracy`: with one sample per prompt, the Wilson score interval (good coverage even near 0% and
  100% and for small P, unlike the normal approximation); with several samples per prompt, a percentile
  bootstrap over prompts (resample prompts with replacement, keep all of each prompt's samples), because
  samples of one prompt are correlated and treating them as independent would make the interval too narrow.
- `compare`: two models evaluated on the same prompts, paired by prompt id (prompts only one side has are
  left out and counted). With one sample per prompt on both sides: Newcombe's paired score interval for the
  difference (method 10 of Newcombe 1998, the "square-and-add" of two Wilson intervals corrected for the
  correlation of the pairs) and McNemar's exact test (two-sided binomial test on the discordant pairs).
  Otherwise: a paired percentile bootstrap over prompts for the interval, and a paired sign-flip
  (randomisation) test for the p-value: under "no difference" the two models' results on a prompt are
  exchangeable, so each prompt's pair is swapped at random. With one sample per prompt that test *is*
  McNemar's exact test (done by Monte Carlo), so both regimes ask the same question.

Unverifiable answers (no answer found, a checker timeout) count as not correct: the input is, per prompt
id, (correct samples, scored samples), and only correct verdicts go in the first number.

Limits: 95% two-sided intervals by default (`confidence` changes it); intervals, not multiple-comparison
corrections (three comparisons at 5% each are not one test at 5%). The bootstrap cannot see variation
between prompts that is not there: if every prompt has the same score (all correct, say) its interval has
zero width. With a single prompt and n > 1 it falls back to Wilson over that prompt's samples.
Bootstraps and the sign-flip test are seeded (the same data and seed give the same numbers); they use
numpy, imported when first needed (`datasets` and `matplotlib` already require it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

CONFIDENCE = 0.95
RESAMPLES = 10_000  # the percentile endpoints move by well under a point between seeds at 100 prompts
SEED = 0

PromptScores = Mapping[str, Sequence[int]]
"""Per prompt id: (correct samples, scored samples). JSON-friendly: a two-item list works as well."""


@dataclass(frozen=True)
class Accuracy:
    """Share of correct samples with its confidence interval; value and interval are None with no samples.

    `method`: "wilson" (one sample per prompt, or a single prompt) or "bootstrap-prompts" (several samples
    per prompt: percentile bootstrap over prompts).
    """

    correct: int
    total: int
    prompts: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    method: str

    def __str__(self) -> str:
        return format_interval(self.value, self.ci_low, self.ci_high)


@dataclass(frozen=True)
class Comparison:
    """Model `a` minus model `b` on the prompts both were evaluated on (accuracies in [0, 1]).

    `a_better` / `b_better`: discordant prompts, where one side scored higher than the other (with one
    sample per prompt: McNemar's b and c, a right and b wrong and the reverse). `ci_method`:
    "newcombe-paired" or "bootstrap-prompts"; `test`: "mcnemar-exact" or "sign-flip".
    `difference`, the interval and `p_value` are None when no prompt is paired.
    """

    a: str
    b: str
    prompts: int
    unpaired: int
    accuracy_a: float | None
    accuracy_b: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    a_better: int
    b_better: int
    p_value: float | None
    test: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.difference is None:
            return "no prompts in common"
        diff = format_interval(self.difference, self.ci_low, self.ci_high, signed=True)
        p = format_p(self.p_value)
        p = f"p {p[0]} {p[1:]}" if p.startswith("<") else f"p = {p}"
        return f"{diff}, {p} ({self.a_better} vs {self.b_better} prompts differ)"


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3).

    >>> [round(x, 3) for x in wilson_interval(62, 100)]
    [0.522, 0.709]
    >>> wilson_interval(0, 10)[0], round(wilson_interval(0, 10)[1], 4)
    (0.0, 0.2775)
    """
    if total <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    z2, p = _z(confidence) ** 2, correct / total
    center = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = math.sqrt(z2) / (1 + z2 / total) * math.sqrt(p * (1 - p) / total + z2 / (4 * total**2))
    # at 0 and n successes the bound is exactly 0 or 1; rounding would leave it a hair off
    return (0.0 if correct == 0 else center - half, 1.0 if correct == total else center + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar p-value: two-sided binomial test of b successes in b + c trials at 1/2.

    p = min(1, 2 · P(X ≤ min(b, c))), X ~ Binomial(b + c, 1/2); 1.0 when there are no discordant pairs.

    >>> mcnemar_exact(1, 6)
    0.125
    >>> mcnemar_exact(0, 0)
    1.0
    """
    n, k = b + c, min(b, c)
    term, tail = 1, 1  # C(n, 0); exact integers, so large n loses nothing
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def newcombe_paired_interval(
    both: int, a_only: int, b_only: int, neither: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval for p_a − p_b from paired binary results (Newcombe 1998, paired data, method 10).

    `both`: prompts both got right; `a_only` / `b_only`: only one side; `neither`: both wrong. The two Wilson
    intervals are combined with the phi correlation of the pairs (continuity-corrected as in the paper).

    The example: Cavo et al. 2012's paired table, worked in Fagerland, Lydersen & Laake (2017), chapter 8.

    >>> [round(x, 4) for x in newcombe_paired_interval(59, 6, 16, 80)]
    [-0.1186, -0.0046]
    """
    n = both + a_only + b_only + neither
    if n <= 0:
        raise ValueError("the paired interval needs at least one pair")
    a_right, a_wrong, b_right, b_wrong = both + a_only, b_only + neither, both + b_only, a_only + neither
    pa, pb = a_right / n, b_right / n
    la, ua = wilson_interval(a_right, n, confidence)
    lb, ub = wilson_interval(b_right, n, confidence)
    phi = 0.0
    if min(a_right, a_wrong, b_right, b_wrong) > 0:
        cross = both * neither - a_only * b_only
        cross = cross - n / 2 if cross > n / 2 else min(cross, 0)  # Newcombe's correction of a positive phi
        phi = cross / math.sqrt(a_right * a_wrong * b_right * b_wrong)
    d = pa - pb
    low = d - math.sqrt(max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
    high = d + math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    return max(-1.0, low), min(1.0, high)


def accuracy(
    scores: PromptScores, *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED
) -> Accuracy:
    """Accuracy over all scored samples with its interval: Wilson for n = 1, a bootstrap over prompts for n > 1.

    The value is correct / total (equal to the mean of the per-prompt accuracies when every prompt has the
    same number of samples); each bootstrap resample recomputes that ratio over prompts drawn with
    replacement. Prompts with no scored sample are ignored.

    >>> a = accuracy({"p1": (1, 1), "p2": (0, 1), "p3": (1, 1)})
    >>> a.method, round(a.value, 3), a.prompts
    ('wilson', 0.667, 3)
    >>> accuracy({}).value is None
    True
    """
    kept = {pid: (int(c), int(t)) for pid, (c, t) in scores.items() if t > 0}
    correct, total = sum(c for c, _ in kept.values()), sum(t for _, t in kept.values())
    if total == 0:
        return Accuracy(0, 0, 0, None, None, None, "wilson")
    value = correct / total
    if len(kept) == 1 or all(t == 1 for _, t in kept.values()):
        low, high = wilson_interval(correct, total, confidence)
        return Accuracy(correct, total, len(kept), value, low, high, "wilson")
    ids = sorted(kept)  # a fixed order: the same scores and seed give the same interval
    c = [kept[i][0] for i in ids]
    t = [kept[i][1] for i in ids]
    low, high = _percentiles(_bootstrap_ratios(c, t, None, None, resamples, seed), confidence)
    return Accuracy(correct, total, len(kept), value, low, high, "bootstrap-prompts")


def compare(
    a: PromptScores,
    b: PromptScores,
    *,
    names: tuple[str, str] = ("a", "b"),
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Paired comparison of two models by prompt id: a − b with its interval, discordant counts, and a p-value.

    One sample per prompt on both sides: Newcombe's paired interval and McNemar's exact test. Otherwise: a
    paired bootstrap over prompts (percentile interval) and a paired sign-flip test (`resamples` random
    swaps; p = (1 + as extreme) / (1 + resamples), so never 0).

    >>> c = compare({"p1": (1, 1), "p2": (1, 1), "p3": (0, 1)}, {"p1": (0, 1), "p2": (1, 1), "p4": (1, 1)})
    >>> c.prompts, c.unpaired, c.a_better, c.b_better, c.difference, c.test
    (2, 2, 1, 0, 0.5, 'mcnemar-exact')
    """
    a = {k: v for k, v in a.items() if v[1] > 0}
    b = {k: v for k, v in b.items() if v[1] > 0}
    ids = sorted(a.keys() & b.keys())
    unpaired = len(a.keys() ^ b.keys())
    ca, ta = [int(a[i][0]) for i in ids], [int(a[i][1]) for i in ids]
    cb, tb = [int(b[i][0]) for i in ids], [int(b[i][1]) for i in ids]
    a_better = sum(x * v > y * u for x, u, y, v in zip(ca, ta, cb, tb, strict=True))  # x/u > y/v, exactly
    b_better = sum(x * v < y * u for x, u, y, v in zip(ca, ta, cb, tb, strict=True))
    binary = all(u == 1 for u in ta) and all(v == 1 for v in tb)
    ci_method, test = ("newcombe-paired", "mcnemar-exact") if binary else ("bootstrap-prompts", "sign-flip")
    base = {"a": names[0], "b": names[1], "prompts": len(ids), "unpaired": unpaired, "ci_method": ci_method,
            "a_better": a_better, "b_better": b_better, "test": test}  # fmt: skip
    if not ids:
        return Comparison(**base, accuracy_a=None, accuracy_b=None, difference=None, ci_low=None, ci_high=None,
                          p_value=None)  # fmt: skip
    acc_a, acc_b = sum(ca) / sum(ta), sum(cb) / sum(tb)
    if binary:
        both = sum(x and y for x, y in zip(ca, cb, strict=True))
        low, high = newcombe_paired_interval(
            both, a_better, b_better, len(ids) - both - a_better - b_better, confidence
        )
        p = mcnemar_exact(a_better, b_better)
    elif len(ids) == 1:  # one prompt: no spread between prompts to resample, and no swap can be more extreme
        low, high, p = None, None, 1.0
    else:
        low, high = _percentiles(_bootstrap_ratios(ca, ta, cb, tb, resamples, seed), confidence)
        p = sign_flip_p(ca, ta, cb, tb, resamples=resamples, seed=seed)
    return Comparison(**base, accuracy_a=acc_a, accuracy_b=acc_b, difference=acc_a - acc_b, ci_low=low,
                      ci_high=high, p_value=p)  # fmt: skip


def sign_flip_p(
    ca: Sequence[int], ta: Sequence[int], cb: Sequence[int], tb: Sequence[int], *, resamples: int, seed: int
) -> float:
    """Two-sided p-value of a paired randomisation test: swap each prompt's pair with probability 1/2.

    The statistic is the difference of the two accuracies (correct / total over the prompts). A swapped set
    at least as far from 0 as the observed one counts as extreme (a 1e-12 tolerance absorbs float noise).
    """
    import numpy as np

    obs = abs(sum(ca) / sum(ta) - sum(cb) / sum(tb))
    ca, ta, cb, tb = (np.asarray(x, dtype=np.float64) for x in (ca, ta, cb, tb))
    rng, extreme = np.random.default_rng(seed), 0
    for rows in _chunks(resamples, len(ca)):
        swap = rng.random((rows, len(ca))) < 0.5  # True: this prompt's two results trade places
        acc_a = np.where(swap, cb, ca).sum(1) / np.where(swap, tb, ta).sum(1)
        acc_b = np.where(swap, ca, cb).sum(1) / np.where(swap, ta, tb).sum(1)
        stat = acc_a - acc_b
        extreme += int((np.abs(stat) >= obs - 1e-12).sum())
    return (1 + extreme) / (1 + resamples)


def _bootstrap_ratios(ca, ta, cb, tb, resamples: int, seed: int):
    """`resamples` bootstrap values of sum(ca)/sum(ta) [− sum(cb)/sum(tb)] over prompts drawn with replacement."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ca, ta = np.asarray(ca, dtype=np.float64), np.asarray(ta, dtype=np.float64)
    paired = cb is not None
    if paired:
        cb, tb = np.asarray(cb, dtype=np.float64), np.asarray(tb, dtype=np.float64)
    out = []
    for rows in _chunks(resamples, len(ca)):
        idx = rng.integers(0, len(ca), size=(rows, len(ca)))
        stat = ca[idx].sum(1) / ta[idx].sum(1)
        out.append(stat - cb[idx].sum(1) / tb[idx].sum(1) if paired else stat)
    return np.concatenate(out)


def _chunks(resamples: int, width: int, cells: int = 2_000_000):
    """Row counts that add up to `resamples`, each block at most `cells` numbers (bounded memory)."""
    step = max(1, cells // max(1, width))
    for start in range(0, resamples, step):
        yield min(step, resamples - start)


def _percentiles(values, confidence: float) -> tuple[float, float]:
    import numpy as np

    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def format_interval(value: float | None, low: float | None, high: float | None, *, signed: bool = False) -> str:
    """ "62.0% [52.2, 70.9]" for an accuracy; "+14.0 pts [+4.3, +23.4]" for a difference (signed).

    >>> format_interval(0.62, 0.5221, 0.7090)
    '62.0% [52.2, 70.9]'
    >>> format_interval(0.14, 0.043, 0.234, signed=True)
    '+14.0 pts [+4.3, +23.4]'
    >>> format_interval(None, None, None)
    '-'
    """
    if value is None:
        return "-"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    head = fmt.format(100 * value) + (" pts" if signed else "%")
    if low is None or high is None:
        return head
    return f"{head} [{fmt.format(100 * low)}, {fmt.format(100 * high)}]"


def format_p(p: float | None) -> str:
    """A p-value with three significant figures, small ones as "<0.0001".

    >>> format_p(0.125), format_p(0.0051234), format_p(0.0000123), format_p(1.0), format_p(None)
    ('0.125', '0.00512', '<0.0001', '1', '-')
    """
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.3g}"
