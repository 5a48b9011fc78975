"""On-policy distillation throughput on SmolLM2-135M: student sampling tokens/s, and a round's time split.

    .venv/bin/python bench/onpolicy_throughput.py [--prompts 16] [--n 2] [--max-tokens 48] [--rounds 1]

Part 1 samples the same rollouts (the demo's arithmetic prompts in the student's bare rendering,
temperature 1, `--n` per prompt) with the student's weights, several ways, and prints each one's useful
tokens/s (completion tokens up to and including the end-of-turn token) and the share of the generated
slots that were useful (a batch runs until its longest row ends; shorter rows idle as padding):
- `padded`: `generate` over batches in the prompts' order;
- `sorted`: what `onpolicy` uses (`TransformersSampler`): batches sorted by prompt length;
- `sorted+bf16`: the same under bfloat16 autocast (`train.bf16: true`);
- `continuous`: transformers' continuous batching (`model.generate_batch`), which refills finished rows.
Part 2 runs `--rounds` real on-policy rounds (teacher: SmolLM2 with the worked examples in its prompt,
in-process) and prints each round's split between sampling, teacher scoring, the student's own
logprobs and training, from the training report. Make the bundled model first (`make install`).
Timings on a shared machine are noisy: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SEQDISTILL_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def prompt_config(limit: int):
    from seqdistill.config import PromptsConfig

    p = ROOT / "prompts" / "arithmetic"
    return PromptsConfig(
        source=str(p / "train.jsonl"), template=str(p / "question.jinja"),
        teacher_examples=str(p / "worked_examples.jsonl"), limit=limit,
    )  # fmt: skip


def sample_padded(model, tok, prompts, n, max_tokens, batch_size, sort: bool, autocast=None):
    """(completions as id lists, generated slots) with `generate` in batches, optionally sorted by prompt length."""
    import torch

    from seqdistill.rollouts import TransformersSampler, _cut, eos_ids, left_pad

    if sort:  # the on-policy sampler itself
        groups = TransformersSampler(model, tok, batch_size, autocast).sample(prompts, n, 1.0, 1.0, max_tokens)
        done = [c.ids for g in groups for c in g]
        slots = _slots(prompts, n, batch_size, groups)
        return done, slots
    ends = eos_ids(model, tok)
    rows = [p for p in prompts for _ in range(n)]
    done, slots = [], 0
    for start in range(0, len(rows), batch_size):
        ids, attention = left_pad(rows[start : start + batch_size], tok.pad_token_id, "cpu")
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=attention, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id, eos_token_id=sorted(ends),
            )  # fmt: skip
        new = out[:, ids.shape[1] :]
        slots += new.numel()
        done += [_cut(r, ends).ids for r in new.tolist()]
    return done, slots


def _slots(prompts, n, batch_size, groups) -> int:
    """Generated slots of the sorted sampler's batches: rows × the longest completion in each batch."""
    rows = sorted(((i, j) for i in range(len(prompts)) for j in range(n)), key=lambda r: len(prompts[r[0]]))
    total = 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        total += len(batch) * max(len(groups[i][j].ids) for i, j in batch)
    return total


def sample_continuous(model, tok, prompts, n, max_tokens):
    """Completions with transformers' continuous batching (a KV cache sized for this workload, not for RAM)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from seqdistill.rollouts import _cut, eos_ids

    ends = eos_ids(model, tok)
    rows = [p for p in prompts for _ in range(n)]
    longest = max(len(p) for p in rows) + max_tokens
    page = 64
    cbc = ContinuousBatchingConfig(
        page_size=page, num_blocks=len(rows) * (-(-longest // page)) + 4, max_batch_tokens=1024,
        max_requests_per_batch=len(rows), use_cuda_graph=False,
    )  # fmt: skip
    gc = GenerationConfig(
        max_new_tokens=max_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
        eos_token_id=sorted(ends), pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    out = model.generate_batch(rows, generation_config=gc, continuous_batching_config=cbc, warmup=False)
    done = [_cut(list(o.generated_tokens), ends).ids for o in out.values()]
    return done, sum(len(d) for d in done)


def part1(args) -> None:
    import torch

    from seqdistill.models import load_model
    from seqdistill.prompts import load_prompts

    model, tok = load_model("bundled:smollm2", "float32", for_generation=True)
    prompts = [
        tok.apply_chat_template(p.messages, add_generation_prompt=True)["input_ids"]
        for p in load_prompts(prompt_config(args.prompts))
    ]
    modes = {
        "padded": lambda: sample_padded(model, tok, prompts, args.n, args.max_tokens, args.batch_size, False),
        "sorted": lambda: sample_padded(model, tok, prompts, args.n, args.max_tokens, args.batch_size, True),
        "sorted+bf16": lambda: sample_padded(
            model, tok, prompts, args.n, args.max_tokens, args.batch_size, True, torch.bfloat16
        ),
        "continuous": lambda: sample_continuous(model, tok, prompts, args.n, args.max_tokens),
    }
    print(f"part 1: {len(prompts)} prompts × {args.n}, max_tokens {args.max_tokens}, batch {args.batch_size}")
    print(f"{'mode':<12} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'useful slots':>13} {'stopped':>8}")
    base = None
    for name, fn in modes.items():
        if name not in args.modes:
            continue
        torch.manual_seed(0)
        t0 = time.perf_counter()
        done, slots = fn()
        seconds = time.perf_counter() - t0
        tokens = sum(len(d) for d in done)
        stopped = sum(bool(d) and d[-1] in {tok.eos_token_id} for d in done)
        rate = tokens / seconds
        base = base or rate
        print(f"{name:<12} {seconds:8.1f} {tokens:7d} {rate:9.1f} {tokens / max(slots, 1):13.0%} "
              f"{stopped:4d}/{len(done):<3d}  ×{rate / base:.2f}")  # fmt: skip


def part2(args) -> None:
    from seqdistill import onpolicy
    from seqdistill.config import TrainConfig

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(
            model="bundled:smollm2", output=str(Path(d) / "student"), objective="onpolicy", learning_rate=1e-6,
            batch_size=8, bf16=args.bf16,
            onpolicy={"teacher": "bundled:smollm2", "prompts": prompt_config(args.prompts).model_dump(),
                      "rounds": args.rounds, "prompts_per_round": args.prompts, "n": args.n,
                      "max_tokens": args.max_tokens, "sample_batch_size": args.batch_size},
        )  # fmt: skip
        report = onpolicy.run(cfg)
    print(f"\npart 2: {args.rounds} round(s) of {args.prompts} prompts × {args.n}, bf16 {args.bf16}")
    print(f"{'round':>5} {'tokens':>7} {'sample':>7} {'teacher':>8} {'student':>8} {'train':>6} {'total':>6} "
          f"{'sample tok/s':>13} {'reverse KL':>11}")  # fmt: skip
    for r in report["rounds"]:
        s = r["seconds"]
        print(f"{r['round']:5d} {r['student_tokens']:7d} {s['sample']:7.1f} {s['teacher']:8.1f} "
              f"{s['student_logprobs']:8.1f} {s['train']:6.1f} {s['total']:6.1f} {r['student_tokens_per_s']:13.1f} "
              f"{r['reverse_kl']:11.4f}")  # fmt: skip
        shares = {k: s[k] / s["total"] for k in ("sample", "teacher", "student_logprobs", "train")}
        print("      shares: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16, help="prompts (part 1) and prompts per round (part 2)")
    ap.add_argument("--n", type=int, default=2, help="samples per prompt")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32, help="rollouts per generate batch")
    ap.add_argument("--rounds", type=int, default=1, help="part 2 rounds (0: skip part 2)")
    ap.add_argument("--bf16", action="store_true", help="part 2 with train.bf16 (autocast sampling and training)")
    ap.add_argument("--modes", default="padded,sorted,sorted+bf16,continuous", help="part 1 modes, comma-separated")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.modes = set(args.modes.split(","))
    if args.modes - {""}:
        part1(args)
    if args.rounds:
        part2(args)


if __name__ == "__main__":
    main()
