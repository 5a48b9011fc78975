"""On-policy distillation: the losses by hand, tiny-model rounds that lower the reverse KL, resume after kill -9."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from seqdistill.cli import app  # noqa: E402
from seqdistill.config import TrainConfig, load_stage  # noqa: E402
from seqdistill.errors import ConfigError  # noqa: E402
from seqdistill.io import read_samples  # noqa: E402
from seqdistill.losses import reverse_kl_pg_loss, token_logprobs, topk_jsd_loss  # noqa: E402
from tests.conftest import write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- the sampled-token reverse-KL loss, by hand

# B=1, L=3, V=4: the student's logits at three completion positions, the tokens it sampled, the teacher's
# log-probability of each sampled token.
LOGITS = [[0.5, -1.0, 2.0, 0.0], [1.0, 0.3, -0.2, 0.4], [-0.6, 0.9, 0.1, 1.5]]
SAMPLED = [2, 0, 3]
TEACHER = [-0.5, -0.4, -1.2]


def _log_softmax(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


def test_reverse_kl_loss_and_gradient_by_hand_on_three_tokens():
    logits = torch.tensor([LOGITS], requires_grad=True)
    targets = torch.tensor([SAMPLED])
    logp = token_logprobs(logits, targets)
    old = logp.detach().clone()  # θ = θold: the round's first step
    loss, stats = reverse_kl_pg_loss(logp, old, torch.tensor([TEACHER]), torch.ones(1, 3, dtype=torch.bool))
    loss.backward()

    # By hand: log p_student of each sampled token, the per-token gap log p_s − log p_t, N = 3 tokens.
    lp = [_log_softmax(LOGITS[t])[SAMPLED[t]] for t in range(3)]
    gaps = [lp[t] - TEACHER[t] for t in range(3)]
    # ratio = 1 and A_t = −gap_t, so loss = −Σ ratio·A / N = Σ gap / N: the sampled-token reverse-KL estimate.
    assert loss.item() == pytest.approx(sum(gaps) / 3, abs=1e-6)
    assert stats["reverse_kl"] == pytest.approx(sum(gaps) / 3, abs=1e-6)
    assert stats["ratio"] == pytest.approx(1.0)
    # d loss / d z_t[v] = −A_t · d ratio_t / d z_t[v] / N = gap_t · (1[v = x_t] − p_t[v]) / N
    for t in range(3):
        p = [math.exp(v) for v in _log_softmax(LOGITS[t])]
        expected = [gaps[t] * ((v == SAMPLED[t]) - p[v]) / 3 for v in range(4)]
        assert logits.grad[0, t].tolist() == pytest.approx(expected, abs=1e-6)
    # the numbers the formula gives, pinned: log p_s = (-0.3423, -0.8530, -0.6512), gaps (0.1577, -0.4530, 0.5488)
    assert [round(v, 4) for v in lp] == [-0.3423, -0.853, -0.6512]
    assert loss.item() == pytest.approx(0.08449, abs=1e-5)
    # tokens 0 and 2 are likelier under the student than under the teacher: descent lowers their logits;
    # token 1 is likelier under the teacher: descent raises it
    assert logits.grad[0, 0, 2] > 0 and logits.grad[0, 2, 3] > 0 and logits.grad[0, 1, 0] < 0


def test_reverse_kl_importance_ratio_after_the_weights_moved_and_masking():
    logits = torch.tensor([LOGITS + [[9.0, 9.0, 9.0, 9.0]]], requires_grad=True)  # a 4th, padded position
    targets = torch.tensor([SAMPLED + [1]])
    mask = torch.tensor([[True, True, True, False]])
    logp = token_logprobs(logits, targets)
    old = torch.tensor([[-0.2, -1.3, -0.9, 5.0]])  # the sampling weights' logprobs (garbage where padded)
    teacher = torch.tensor([TEACHER + [7.0]])
    loss, stats = reverse_kl_pg_loss(logp, old, teacher, mask, num_tokens=4)
    loss.backward()
    lp = [_log_softmax(LOGITS[t])[SAMPLED[t]] for t in range(3)]
    ratios = [math.exp(lp[t] - o) for t, o in enumerate([-0.2, -1.3, -0.9])]
    advantages = [-(o - TEACHER[t]) for t, o in enumerate([-0.2, -1.3, -0.9])]
    assert loss.item() == pytest.approx(-sum(r * a for r, a in zip(ratios, advantages, strict=True)) / 4, abs=1e-6)
    assert stats["ratio"] == pytest.approx(sum(ratios) / 3, abs=1e-6)
    assert stats["reverse_kl"] == pytest.approx(sum(-a for a in advantages) / 3, abs=1e-6)
    assert torch.all(logits.grad[0, 3] == 0)  # padding gets no gradient
    for t in range(3):
        p = [math.exp(v) for v in _log_softmax(LOGITS[t])]
        expected = [-advantages[t] * ratios[t] * ((v == SAMPLED[t]) - p[v]) / 4 for v in range(4)]
        assert logits.grad[0, t].tolist() == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- top-k generalized JSD


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def test_topk_jsd_beta_limits_are_forward_and_reverse_kl_on_top_k_plus_tail():
    # V=5, K=2 at one position: the teacher's top-2 ids (3, 1) with probabilities 0.6 and 0.25 (tail 0.15).
    row = [0.2, 1.1, -0.4, 1.6, 0.0]
    logits = torch.tensor([[row]], requires_grad=True)
    ids = torch.tensor([[[3, 1]]])
    lps = torch.tensor([[[math.log(0.6), math.log(0.25)]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    s = [math.exp(v) for v in _log_softmax(row)]
    student = [s[3], s[1], 1 - s[3] - s[1]]
    teacher = [0.6, 0.25, 0.15]
    forward, _ = topk_jsd_loss(logits, ids, lps, mask, beta=0.0)
    reverse, _ = topk_jsd_loss(logits, ids, lps, mask, beta=1.0)
    assert forward.item() == pytest.approx(_kl(teacher, student), abs=1e-6)
    assert reverse.item() == pytest.approx(_kl(student, teacher), abs=1e-6)
    mixture = [0.5 * a + 0.5 * b for a, b in zip(teacher, student, strict=True)]
    jsd, _ = topk_jsd_loss(logits, ids, lps, mask, beta=0.5)
    assert jsd.item() == pytest.approx(0.5 * _kl(teacher, mixture) + 0.5 * _kl(student, mixture), abs=1e-6)
    assert forward.item() != pytest.approx(reverse.item(), abs=1e-3)  # the example tells them apart


def test_topk_jsd_equals_trls_generalized_jsd_when_k_covers_the_vocabulary():
    gkd = pytest.importorskip("trl.experimental.gkd")
    torch.manual_seed(0)
    student = torch.randn(2, 3, 7, requires_grad=True)
    teacher = torch.randn(2, 3, 7)
    ids = torch.arange(7).expand(2, 3, 7)
    mask = torch.ones(2, 3, dtype=torch.bool)
    for beta in (0.0, 0.3, 1.0):
        ours, _ = topk_jsd_loss(student, ids, torch.log_softmax(teacher, -1), mask, beta=beta)
        theirs = gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels=torch.zeros(2, 3), beta=beta)
        (g_ours,) = torch.autograd.grad(ours, student)
        (g_theirs,) = torch.autograd.grad(theirs, student)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5), beta
        assert torch.allclose(g_ours, g_theirs, atol=1e-6), beta


def test_topk_reverse_kl_sees_student_mass_outside_the_teachers_top_k():
    # Same distribution on the teacher's top-2, different mass elsewhere: renormalising on the top-2 would call
    # both students equal; with the tail bucket the one that spreads mass off the support pays more.
    ids = torch.tensor([[[0, 1]]])
    lps = torch.tensor([[[math.log(0.7), math.log(0.29)]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    focused = torch.tensor([[[3.0, 2.0, -5.0, -5.0, -5.0]]])
    spread = torch.tensor([[[3.0, 2.0, 2.5, 2.5, 2.5]]])
    kl_focused, _ = topk_jsd_loss(focused, ids, lps, mask, beta=1.0)
    kl_spread, _ = topk_jsd_loss(spread, ids, lps, mask, beta=1.0)
    assert kl_spread.item() > kl_focused.item() + 0.5


def test_topk_jsd_ignores_missing_entries_and_masked_positions_with_finite_gradients():
    logits = torch.randn(1, 3, 6, requires_grad=True)
    ids = torch.tensor([[[2, -1], [-1, -1], [4, 1]]])
    lps = torch.tensor([[[-0.1, 0.0], [0.0, 0.0], [-0.5, -1.5]]])
    mask = torch.tensor([[True, True, False]])
    loss, _ = topk_jsd_loss(logits, ids, lps, mask, beta=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[0, 1] == 0) and torch.all(logits.grad[0, 2] == 0)  # no teacher entry / masked


# ---------------------------------------------------------------- tiny models: teacher ≠ student


def _sft(model_dir: str, saves: dict[int, Path]) -> None:
    """SFT steps (lr 1e-2) teaching the tiny model to answer 'yes yes yes yes' to sums, saved after given steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(max(saves)):
        question = [{"role": "user", "content": f"What is {step % 7} + {step % 5}?"}]
        ids = tok.apply_chat_template(question + [{"role": "assistant", "content": "yes yes yes yes"}])["input_ids"]
        start = len(tok.apply_chat_template(question, add_generation_prompt=True)["input_ids"])
        ids = torch.tensor([ids])
        labels = ids.clone()
        labels[:, :start] = -100
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
        if step + 1 in saves:
            model.save_pretrained(saves[step + 1])
            tok.save_pretrained(saves[step + 1])


@pytest.fixture(scope="module")
def pair(tiny_model, tmp_path_factory) -> tuple[str, str]:
    """(student, teacher) from one tiny model: the teacher learnt the answer pattern (40 SFT steps), the
    student only started to (the same run after 14 steps), so its samples sometimes hit what the teacher prefers."""
    d = tmp_path_factory.mktemp("pair")
    _sft(tiny_model, {14: d / "student", 40: d / "teacher"})
    return str(d / "student"), str(d / "teacher")


def _prompts_file(path: Path, teacher: str, questions: list[str], teacher_prompt: bool = False) -> Path:
    rows = []
    for i, q in enumerate(questions):
        meta = {"teacher_prompt": [{"role": "system", "content": "Answer."}, {"role": "user", "content": q}]}
        rows.append({
            "id": f"s{i}", "prompt_id": f"p{i}", "sample_index": 0, "prompt": [{"role": "user", "content": q}],
            "completion": [{"role": "assistant", "content": "yes yes yes yes"}], "reference": "yes",
            "finish_reason": "stop", "teacher": {"model": teacher, "backend": "transformers"},
            "meta": meta if teacher_prompt else {},
        })  # fmt: skip
    return write_jsonl(path, rows)


def reverse_kl_on(student_dir: str, teacher_dir: str, questions: list[str], seed: int = 123) -> float:
    """The exact per-token KL(student ‖ teacher) over the full vocabulary, along the student's own samples."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seqdistill.rollouts import TransformersSampler, completion_logits

    tok = AutoTokenizer.from_pretrained(student_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"]
        for q in questions
    ]
    torch.manual_seed(seed)
    groups = TransformersSampler(student, tok, 64).sample(prompts, 4, 1.0, 1.0, 8)
    rows = [(p, c.ids) for p, group in zip(prompts, groups, strict=True) for c in group]
    with torch.no_grad():
        s, _, mask = completion_logits(student, [p for p, _ in rows], [c for _, c in rows], tok.pad_token_id)
        t, _, _ = completion_logits(teacher, [p for p, _ in rows], [c for _, c in rows], tok.pad_token_id)
        log_s, log_t = torch.log_softmax(s.float(), -1), torch.log_softmax(t.float(), -1)
        kl = (log_s.exp() * (log_s - log_t)).sum(-1)
    return float((kl * mask).sum() / mask.sum())


TRAIN_QUESTIONS = [f"What is {i} + {i + 1}?" for i in range(16)]
HELDOUT = [f"What is {i} times {i + 2}?" for i in range(6)]


def _onpolicy_cfg(input_file: Path, student: str, output: Path, **onpolicy) -> TrainConfig:
    settings = {"rounds": 4, "prompts_per_round": 8, "n": 4, "max_tokens": 8, **onpolicy}
    return TrainConfig(
        input=str(input_file), model=student, output=str(output), objective="onpolicy", learning_rate=2e-2,
        batch_size=8, seed=1, onpolicy=settings,
    )  # fmt: skip


def test_onpolicy_rounds_lower_the_reverse_kl_on_heldout_prompts(pair, tmp_path):
    from seqdistill import onpolicy

    student, teacher = pair
    kept = _prompts_file(tmp_path / "kept.jsonl", teacher, TRAIN_QUESTIONS, teacher_prompt=True)
    before = reverse_kl_on(student, teacher, HELDOUT)
    report = onpolicy.run(_onpolicy_cfg(kept, student, tmp_path / "out"))
    after = reverse_kl_on(str(tmp_path / "out"), teacher, HELDOUT)
    # Measured: 3.45 → 1.15-1.54 nats/token over training seeds 1-5 (after/before 0.33-0.45): a wide margin
    assert after < 0.7 * before, (before, after)
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[-1]["reverse_kl"] < rounds[0]["reverse_kl"]  # the report's own per-round estimate falls too
    for r in rounds:
        assert r["rollouts"] == 32 and r["student_tokens"] == r["teacher_tokens_scored"] > 0
        assert set(r["seconds"]) == {"sample", "teacher", "student_logprobs", "train", "total"}
    assert report["objective"] == "onpolicy" and report["steps"] == 16 and report["teacher"] == teacher
    assert report["tokens"] == sum(r["student_tokens"] for r in rounds)
    saved = json.loads((tmp_path / "out" / "training_report.json").read_text())
    assert saved["rounds"] == rounds and saved["first_loss"] is not None  # what `seqdistill report` reads

    # every rollout is a valid record: the student's answer, the teacher's scores of each of its tokens
    samples = list(read_samples(tmp_path / "out" / "onpolicy" / "rollouts-round-0001.jsonl"))
    assert len(samples) == 32
    for s in samples:
        lp, own = s.meta["logprobs"], s.meta["student_logprobs"]["logprobs"]
        assert len(lp["tokens"]) == len(lp["ids"]) == len(lp["logprobs"]) == len(own) == s.usage.completion_tokens
        assert s.meta["teacher_prompt"][0] == {"role": "system", "content": "Answer."}  # the teacher's own prompt
        assert s.teacher.model == student and s.meta["onpolicy"]["round"] == 1
        assert s.finish_reason in ("stop", "length")
        if s.finish_reason == "stop":
            assert lp["ids"][-1] == 2  # the end-of-turn token is scored (and trained on)


def test_jsd_loss_with_sft_steps_trains_and_writes_the_teachers_top_k(pair, tmp_path):
    from seqdistill import onpolicy

    student, teacher = pair
    kept = _prompts_file(tmp_path / "kept.jsonl", teacher, TRAIN_QUESTIONS[:4])
    cfg = _onpolicy_cfg(kept, student, tmp_path / "out", rounds=1, prompts_per_round=4, n=2, loss="jsd", beta=0.5,
                        top_k=5, sft_share=0.5)  # fmt: skip
    report = onpolicy.run(cfg)
    assert report["rounds"][0]["steps"] == 1 and report["rounds"][0]["sft_steps"] == 1
    assert {h["kind"] for h in report["loss_history"]} == {"onpolicy", "sft"}
    assert all(math.isfinite(h["loss"]) for h in report["loss_history"])
    rollouts = tmp_path / "out" / "onpolicy" / "rollouts-round-0001.jsonl"
    samples = list(read_samples(rollouts))
    assert all(len(step) == 5 for s in samples for step in s.meta["logprobs"]["top"])
    assert onpolicy.teacher_name(TrainConfig(input=str(rollouts))) == teacher  # not the student who wrote them
    from safetensors.torch import load_file

    old, new = load_file(Path(student) / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert any(not torch.equal(old[k], new[k]) for k in old)  # the weights moved


def test_a_teacher_behind_a_server_scores_like_the_same_teacher_in_process(pair, tmp_path):
    """teacher_backend openai: the rollouts go to a server's prompt logprobs (the loopback server runs the REAL
    teacher model, as vLLM answers); the same round with the teacher in-process gives the same scores."""
    from seqdistill import onpolicy
    from tests.fake_openai_server import FakeOpenAIServer

    student, teacher = pair
    kept = _prompts_file(tmp_path / "kept.jsonl", teacher, TRAIN_QUESTIONS[:4], teacher_prompt=True)
    local = _onpolicy_cfg(kept, student, tmp_path / "local", rounds=1, prompts_per_round=4, n=2, loss="jsd", top_k=3)
    onpolicy.run(local)
    with FakeOpenAIServer(models=[teacher], scorer=teacher) as server:
        served = _onpolicy_cfg(kept, student, tmp_path / "served", rounds=1, prompts_per_round=4, n=2, loss="jsd",
                               top_k=3, teacher_backend="openai", teacher_base_url=server.base_url)  # fmt: skip
        onpolicy.run(served)
        assert len(server.completions_requests()) >= 8  # every rollout was scored by the server
    rounds = [list(read_samples(tmp_path / d / "onpolicy" / "rollouts-round-0001.jsonl")) for d in ("local", "served")]
    assert [s.id for s in rounds[0]] == [s.id for s in rounds[1]]  # the same seeded rollouts
    for a, b in zip(*rounds, strict=True):
        la, lb = a.meta["logprobs"], b.meta["logprobs"]
        assert la["ids"] == lb["ids"]
        assert la["logprobs"] == pytest.approx(lb["logprobs"], abs=2e-4)  # server answers are rounded to 1e-4
        assert [[t for t, _ in row] for row in la["top"]] == [[t for t, _ in row] for row in lb["top"]]


def test_a_served_teacher_name_takes_its_tokenizer_from_teacher_tokenizer(pair, tmp_path):
    """vllm serve --served-model-name: the name the server answers to is not a model dir here; the teacher's
    tokenizer comes from onpolicy.teacher_tokenizer, and without it the run stops at once with one line naming it."""
    from seqdistill import onpolicy
    from tests.fake_openai_server import FakeOpenAIServer

    student, teacher = pair
    kept = _prompts_file(tmp_path / "kept.jsonl", teacher, TRAIN_QUESTIONS[:2], teacher_prompt=True)
    with FakeOpenAIServer(models=["served-teacher"], scorer=teacher) as server:
        common = {"rounds": 1, "prompts_per_round": 2, "n": 2, "teacher": "served-teacher",
                  "teacher_backend": "openai", "teacher_base_url": server.base_url}  # fmt: skip
        with pytest.raises(ConfigError, match="onpolicy.teacher_tokenizer"):
            onpolicy.run(_onpolicy_cfg(kept, student, tmp_path / "no-tokenizer", **common))
        assert server.completions_requests() == []  # stopped before any rollout was scored
        report = onpolicy.run(_onpolicy_cfg(kept, student, tmp_path / "out", teacher_tokenizer=teacher, **common))
    assert report["teacher"] == "served-teacher" and report["rounds"][0]["teacher_tokens_scored"] > 0


# ---------------------------------------------------------------- resume after kill -9

KILL_IN_ROUND_2 = """
import os, signal, sys
import seqdistill.onpolicy as op
step = op._step
def killing_step(ctx, kind, items):
    out = step(ctx, kind, items)
    if ctx.step == ctx.steps_per_round + 1:  # round 2 has taken 1 of its optimizer steps
        os.kill(os.getpid(), signal.SIGKILL)
    return out
op._step = killing_step
from seqdistill.cli import app
sys.argv = ["seqdistill", *sys.argv[1:]]
app()
"""


def _train_args(kept: Path, student: str, output: Path) -> list[str]:
    sets = ["objective=onpolicy", "onpolicy.rounds=3", "onpolicy.prompts_per_round=2", "onpolicy.n=2",
            "onpolicy.max_tokens=4", "onpolicy.steps_per_round=2", "batch_size=2", "learning_rate=1e-2"]  # fmt: skip
    return ["train", str(kept), "--model", student, "--output", str(output), *[a for s in sets for a in ("--set", s)]]


def _run(args: list[str], script: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEQDISTILL_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "seqdistill", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_resume_after_kill_9_mid_round_2_ends_with_the_weights_of_an_uninterrupted_run(pair, tmp_path):
    from safetensors.torch import load_file

    student, teacher = pair
    kept = _prompts_file(tmp_path / "kept.jsonl", teacher, TRAIN_QUESTIONS[:6])
    whole = _run(_train_args(kept, student, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = _run(_train_args(kept, student, tmp_path / "resumed"), KILL_IN_ROUND_2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    d = tmp_path / "resumed" / "onpolicy"
    assert (d / "checkpoint-0001" / "state.json").is_file() and not (d / "checkpoint-0002").exists()
    assert (d / "rollouts-round-0002.jsonl").is_file()  # round 2 had sampled and started training

    resumed = _run(_train_args(kept, student, tmp_path / "resumed"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((tmp_path / "resumed" / "training_report.json").read_text())
    assert report["start_round"] == 2 and report["resumed_from"].endswith("checkpoint-0001")
    assert report["steps_run"] == 4 and report["steps"] == 6 and report["rounds_done"] == 3
    reference = json.loads((tmp_path / "whole" / "training_report.json").read_text())
    assert [r["reverse_kl"] for r in report["rounds"]] == [r["reverse_kl"] for r in reference["rounds"]]
    assert [h["loss"] for h in report["loss_history"]] == [h["loss"] for h in reference["loss_history"]]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the rerun sampled round 2 again exactly as the killed run had
    assert (d / "rollouts-round-0002.jsonl").read_text() == (
        tmp_path / "whole" / "onpolicy" / "rollouts-round-0002.jsonl"
    ).read_text()


def test_a_checkpoint_of_other_settings_is_refused(pair, tmp_path):
    student, teacher = pair
    kept = _prompts_file(tmp_path / "kept.jsonl", teacher, TRAIN_QUESTIONS[:2])
    from seqdistill import onpolicy

    onpolicy.run(_onpolicy_cfg(kept, student, tmp_path / "out", rounds=1, prompts_per_round=2, n=1))
    with pytest.raises(ConfigError, match=r"other settings \(onpolicy.n: 1, now 2\)"):
        onpolicy.run(_onpolicy_cfg(kept, student, tmp_path / "out", rounds=1, prompts_per_round=2, n=2))


# ---------------------------------------------------------------- guards and config


def test_vocabulary_check_refuses_a_teacher_with_another_tokenizer(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.add_tokens(["<teacher-only>"])
    tok.save_pretrained(tmp_path / "teacher")
    kept = _prompts_file(tmp_path / "kept.jsonl", str(tmp_path / "teacher"), TRAIN_QUESTIONS[:2])
    result = CliRunner().invoke(
        app, ["train", str(kept), "--model", tiny_model, "--check", "--set", "objective=onpolicy"]
    )
    assert result.exit_code == 1
    assert "different vocabularies" in result.output and "'<teacher-only>'" in result.output
    assert "on-policy distillation needs a shared tokenizer" in result.output
    assert "Traceback" not in result.output


def test_train_check_reports_the_onpolicy_plan(tiny_model, tmp_path):
    kept = _prompts_file(tmp_path / "kept.jsonl", tiny_model, TRAIN_QUESTIONS[:5], teacher_prompt=True)
    result = CliRunner().invoke(
        app, ["train", str(kept), "--model", tiny_model, "--check", "--set", "objective=onpolicy",
              "--set", "onpolicy.prompts_per_round=4", "--set", "onpolicy.n=3", "--set", "batch_size=4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rollouts_per_round" in result.output and "12" in result.output
    assert "teacher_prompt_differs" in result.output


def test_onpolicy_config_keys_and_refusals(tmp_path):
    cfg = load_stage("train", None, {"input": "k.jsonl"}, ["objective=onpolicy", "onpolicy.rounds=2"])
    assert cfg.objective == "onpolicy" and cfg.onpolicy.rounds == 2 and cfg.onpolicy.loss == "reverse_kl"
    assert TrainConfig().objective == "sft"  # the default objective is unchanged
    with pytest.raises(ConfigError, match="objective onpolicy does not support lora"):
        load_stage("train", None, None, ["objective=onpolicy", "lora=true"])
    with pytest.raises(ConfigError, match="unknown config key 'onpolicy.lmbda'"):
        load_stage("train", None, None, ["objective=onpolicy", "onpolicy.lmbda=0.5"])
    with pytest.raises(ConfigError, match="onpolicy.sft_share"):
        load_stage("train", None, None, ["onpolicy.sft_share=1"])


def test_docs_describe_every_onpolicy_key():
    from seqdistill.config import OnPolicyConfig

    text = (ROOT / "docs" / "onpolicy.md").read_text(encoding="utf-8")
    missing = [k for k in OnPolicyConfig.model_fields if f"| `onpolicy.{k}` |" not in text]
    assert not missing, f"docs/onpolicy.md lacks {missing}"
