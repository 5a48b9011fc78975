"""Soft-target distillation loss (seqdistill.kd): hand computation, limits, masking, a tiny model, guards."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from seqdistill.errors import SeqdistillError  # noqa: E402
from seqdistill.kd import (  # noqa: E402
    VocabularyMismatch,
    kd_loss,
    logprobs_to_tensors,
    require_same_vocabulary,
    same_vocabulary,
)

# B=1, L=3, V=5, K=2: position 2 has only one teacher entry (the other is -1 padding).
LOGITS = [
    [1.0, 2.0, 0.5, -1.0, 0.0],
    [0.2, -0.5, 1.5, 0.3, -2.0],
    [-0.4, 0.8, 0.1, 1.2, 0.6],
]
TARGETS = [1, 3, 4]
TOP_IDS = [[1, 0], [2, 3], [4, -1]]
TOP_LPS = [[-0.3, -1.5], [-0.7, -0.9], [-0.05, 0.0]]


def _tensors(mask=(True, True, True)):
    return (
        torch.tensor([LOGITS], dtype=torch.float32),
        torch.tensor([TARGETS]),
        torch.tensor([TOP_IDS]),
        torch.tensor([TOP_LPS], dtype=torch.float32),
        torch.tensor([list(mask)]),
    )


def _softmax2(a: float, b: float) -> tuple[float, float]:
    ea, eb = math.exp(a), math.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def test_hand_computed_loss_on_three_tokens():
    t, alpha = 2.0, 0.5
    # Position 0: teacher ids (1, 0) with logprobs (-0.3, -1.5); student logits there (2.0, 1.0).
    p0 = _softmax2(-0.3 / 2, -1.5 / 2)
    q0 = _softmax2(2.0 / 2, 1.0 / 2)
    kl0 = p0[0] * math.log(p0[0] / q0[0]) + p0[1] * math.log(p0[1] / q0[1])
    # Position 1: teacher ids (2, 3) with logprobs (-0.7, -0.9); student logits there (1.5, 0.3).
    p1 = _softmax2(-0.7 / 2, -0.9 / 2)
    q1 = _softmax2(1.5 / 2, 0.3 / 2)
    kl1 = p1[0] * math.log(p1[0] / q1[0]) + p1[1] * math.log(p1[1] / q1[1])
    # Position 2: a single teacher entry: both renormalise to probability 1 on it, KL = 0.
    kl2 = 0.0
    kd = t * t * (kl0 + kl1 + kl2) / 3

    def ce(row, target):
        return math.log(sum(math.exp(z) for z in row)) - row[target]

    ce_mean = (ce(LOGITS[0], 1) + ce(LOGITS[1], 3) + ce(LOGITS[2], 4)) / 3
    expected = alpha * kd + (1 - alpha) * ce_mean

    loss, parts = kd_loss(*_tensors(), temperature=t, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["kd"] == pytest.approx(kd, rel=1e-5)
    assert parts["ce"] == pytest.approx(ce_mean, rel=1e-5)
    assert kd > 0.01  # the example is not degenerate
    assert loss.item() == pytest.approx(0.6779901, abs=1e-6)  # the number above, pinned


def test_alpha_zero_is_cross_entropy_on_masked_positions():
    logits, targets, ids, lps, _ = _tensors()
    mask = torch.tensor([[True, False, True]])
    loss, parts = kd_loss(logits, targets, ids, lps, mask, temperature=3.0, alpha=0.0)
    expected = torch.nn.functional.cross_entropy(logits[0][[0, 2]], targets[0][[0, 2]])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["ce"] == pytest.approx(expected.item(), rel=1e-6)


def test_alpha_one_student_equal_to_teacher_on_support_gives_zero_kd():
    gen = torch.Generator().manual_seed(0)
    b, seq_len, vocab, k = 2, 4, 11, 3
    logits = torch.randn(b, seq_len, vocab, generator=gen)
    ids = torch.stack([torch.randperm(vocab, generator=gen)[:k] for _ in range(b * seq_len)]).view(b, seq_len, k)
    # The teacher's logprobs: the student's full-vocabulary log-softmax at those ids (not renormalised on k).
    lps = torch.log_softmax(logits, dim=-1).gather(-1, ids)
    targets = torch.zeros(b, seq_len, dtype=torch.long)
    mask = torch.ones(b, seq_len, dtype=torch.bool)
    for t in (1.0, 2.5):
        loss, parts = kd_loss(logits, targets, ids, lps, mask, temperature=t, alpha=1.0)
        assert abs(loss.item()) < 1e-5
        assert abs(parts["kd"]) < 1e-5
    # ...and a different teacher is not (the check above can fail).
    loss, _ = kd_loss(logits, targets, ids, lps.flip(-1), mask, temperature=1.0, alpha=1.0)
    assert loss.item() > 1e-3


def test_masked_positions_do_not_affect_the_loss():
    logits, targets, ids, lps, _ = _tensors()
    mask = torch.tensor([[True, False, True]])
    loss, parts = kd_loss(logits, targets, ids, lps, mask, temperature=2.0, alpha=0.5)
    changed = logits.clone()
    changed[0, 1] = torch.tensor([9.0, -7.0, 3.0, 20.0, -4.0])
    lps2 = lps.clone()
    lps2[0, 1] = torch.tensor([-5.0, -0.01])
    targets2 = targets.clone()
    targets2[0, 1] = 0
    loss2, parts2 = kd_loss(changed, targets2, ids, lps2, mask, temperature=2.0, alpha=0.5)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-7)
    assert parts2 == pytest.approx(parts)
    # Unmasking it does change the loss (the comparison above can fail).
    loss3, _ = kd_loss(changed, targets2, ids, lps2, torch.ones(1, 3, dtype=torch.bool), temperature=2.0)
    assert loss3.item() != pytest.approx(loss.item(), rel=1e-3)
    # No gradient reaches the masked-out position.
    leaf = changed.clone().requires_grad_(True)
    kd_loss(leaf, targets2, ids, lps2, mask, temperature=2.0, alpha=0.5)[0].backward()
    assert torch.all(leaf.grad[0, 1] == 0)
    assert torch.isfinite(leaf.grad).all() and leaf.grad[0, 0].abs().sum() > 0


def test_positions_without_teacher_entries_are_finite():
    logits, targets, ids, lps, mask = _tensors()
    ids[0, 1] = -1
    leaf = logits.clone().requires_grad_(True)
    loss, parts = kd_loss(leaf, targets, ids, lps, mask, temperature=2.0, alpha=0.5)
    loss.backward()
    assert math.isfinite(loss.item()) and math.isfinite(parts["kd"])
    assert torch.isfinite(leaf.grad).all()


def test_kd_loss_decreases_on_a_tiny_model():
    torch.manual_seed(0)
    vocab, k, b, seq_len = 50, 5, 16, 12
    teacher_logprobs = torch.log_softmax(torch.randn(vocab, vocab) * 2.0, dim=-1)  # next-token table
    inputs = torch.randint(0, vocab, (b, seq_len))
    top_lps, top_ids = teacher_logprobs[inputs].topk(k, dim=-1)  # [B, L, K]
    targets = torch.distributions.Categorical(logits=teacher_logprobs[inputs]).sample()
    mask = torch.ones(b, seq_len, dtype=torch.bool)
    mask[:, :3] = False  # a "prompt"
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 16), torch.nn.Linear(16, vocab))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    kds = []
    for _ in range(30):
        loss, parts = kd_loss(model(inputs), targets, top_ids, top_lps, mask, temperature=2.0, alpha=0.9)
        assert math.isfinite(loss.item())
        kds.append(parts["kd"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(math.isfinite(x) for x in kds)
    assert kds[0] > 0.1
    assert kds[-1] < 0.5 * kds[0], kds


def test_require_same_vocabulary():
    a = {"<s>": 0, "hello": 1, "world": 2}
    require_same_vocabulary(a, dict(a), "teacher-x", "student-y")  # passes
    assert same_vocabulary(a, dict(a))
    b = {"<s>": 0, "hello": 1, "planet": 2, "!": 3}
    assert not same_vocabulary(a, b)
    with pytest.raises(VocabularyMismatch) as err:
        require_same_vocabulary(a, b, "org/Teacher-7B", "org/Student-0.5B")
    msg = str(err.value)
    assert isinstance(err.value, SeqdistillError)
    assert "org/Teacher-7B" in msg and "org/Student-0.5B" in msg
    assert "3 vs 4 tokens" in msg
    assert "id 2" in msg and "'world'" in msg and "'planet'" in msg
    assert "sequence distillation" in msg
    assert "\n" not in msg


def test_logprobs_to_tensors_maps_known_tokens_and_pads():
    vocab = {"a": 0, "b": 1, "c": 2}
    record = {
        "tokens": ["a", "b", "zz"],
        "logprobs": [-0.1, -0.2, -3.0],
        "top": [
            [["a", -0.1], ["b", -2.5], ["c", -3.0]],  # more than k: first k kept
            [["b", -0.2], ["??", -1.0]],  # unknown token -> -1
            [],  # no entries
        ],
    }
    ids, lps = logprobs_to_tensors(record, vocab.get, k=2)
    assert ids.dtype == torch.long and ids.shape == (3, 2) and lps.shape == (3, 2)
    assert ids.tolist() == [[0, 1], [1, -1], [-1, -1]]
    assert lps.flatten().tolist() == pytest.approx([-0.1, -2.5, -0.2, 0.0, 0.0, 0.0])
    # A list of segments concatenates; no "top" (captured with k = 0) gives all -1 rows.
    ids2, _ = logprobs_to_tensors([record, {"tokens": ["a"], "logprobs": [-0.1]}], vocab.get, k=2)
    assert ids2.tolist() == [[0, 1], [1, -1], [-1, -1], [-1, -1]]
    # The tensors feed kd_loss directly.
    logits = torch.randn(1, 3, 3)
    loss, _ = kd_loss(logits, torch.tensor([[0, 1, 2]]), ids[None], lps[None], torch.ones(1, 3, dtype=torch.bool))
    assert math.isfinite(loss.item())
