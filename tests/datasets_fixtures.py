"""Small rows shaped like public trace datasets (field names and nesting as those datasets have them), and writers.

- OpenR1-Math-220k (open-r1): problem, solution, answer, uuid, generations (list), correctness_math_verify
  (list), is_reasoning_complete (list), finish_reasons (list), correctness_llama, messages;
- OpenThoughts-114k (open-thoughts) and Sky-T1 (NovaSky-AI): system + conversations of {from, value} turns;
- classic ShareGPT: conversations with human / gpt speakers;
- ultrachat_200k (HuggingFaceH4): prompt (a string), prompt_id, messages (several turns);
- NuminaMath-CoT (AI-MO): source, problem, solution, messages;
- TRL's own formats: conversational prompt-completion, and the standard (string) prompt-completion.
Every sum's answer is right except where a row says otherwise, so an answer check has something to drop.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.conftest import write_jsonl

OPENTHOUGHTS_SYSTEM = (
    "Your role as an assistant involves thoroughly exploring questions through a systematic long thinking "
    "process before providing the final precise and accurate solutions."
)


def _sum(a: int, b: int, wrong: bool = False) -> str:
    return str(a + b + (1 if wrong else 0))


def openr1_rows() -> list[dict[str, Any]]:
    """Two problems with two generations each; the second generation of the first problem is wrong."""
    rows = []
    for a, b in ((2, 3), (4, 5)):
        question = f"What is {a} + {b}? Please reason step by step, and put your final answer within \\boxed{{}}."
        gens = [f"<think>\n{a} plus {b}.\n</think>\n\nSo the sum is \\boxed{{{_sum(a, b)}}}."]
        gens.append(f"<think>\nCount up from {a}.\n</think>\n\nThe answer is \\boxed{{{_sum(a, b, wrong=a == 2)}}}.")
        rows.append(
            {
                "problem": question,
                "solution": f"{a} + {b} = {a + b}, so the answer is ${a + b}$.",
                "answer": str(a + b),
                "problem_type": "Algebra",
                "question_type": "math-word-problem",
                "source": "olympiads",
                "uuid": f"{a:08d}-0000-4000-8000-{b:012d}",
                "is_reasoning_complete": [True, True],
                "generations": gens,
                "correctness_math_verify": [True, a != 2],
                "correctness_llama": None,
                "finish_reasons": ["stop", "stop"],
                "correctness_count": 2 if a != 2 else 1,
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": gens[0]}],
            }
        )
    return rows


OPENR1_FIELDS = {
    "prompt": "problem",
    "completion": "generations",
    "reference": "answer",
    "prompt_id": "uuid",
    "finish_reason": "finish_reasons",
    "per_generation": ["correctness_math_verify", "is_reasoning_complete"],
}


def openthoughts_rows() -> list[dict[str, Any]]:
    """OpenThoughts-114k / Sky-T1: a `system` column and `conversations` with user / assistant speakers."""
    rows = []
    for a, b in ((1, 2), (3, 4), (5, 6)):
        rows.append(
            {
                "system": OPENTHOUGHTS_SYSTEM,
                "conversations": [
                    {"from": "user", "value": f"Return your final response within \\boxed{{}}. What is {a} + {b}?"},
                    {
                        "from": "assistant",
                        "value": f"<|begin_of_thought|>\n\n{a} and {b} make {a + b}.\n\n<|end_of_thought|>\n\n"
                        f"<|begin_of_solution|>\n\n\\boxed{{{_sum(a, b, wrong=a == 5)}}}\n\n<|end_of_solution|>",
                    },
                ],
            }
        )
    return rows


def sharegpt_rows() -> list[dict[str, Any]]:
    """Classic ShareGPT: human / gpt speakers, an id per conversation, and a reference we map."""
    return [
        {
            "id": f"sharegpt-{a}",
            "conversations": [
                {"from": "human", "value": f"What is {a} + {b}?"},
                {"from": "gpt", "value": f"{a} + {b} = {a + b}, so \\boxed{{{a + b}}}."},
            ],
            "gold": str(a + b),
        }
        for a, b in ((7, 1), (8, 2), (9, 3))
    ]


def ultrachat_rows() -> list[dict[str, Any]]:
    """ultrachat_200k: `prompt` is a string beside `messages`; the answer to learn is the last assistant turn."""
    rows = []
    for a, b in ((10, 1), (20, 2)):
        first = f"I am adding numbers. What is {a} + {b}?"
        rows.append(
            {
                "prompt": first,
                "prompt_id": hashlib.sha256(first.encode()).hexdigest(),
                "messages": [
                    {"role": "user", "content": first},
                    {"role": "assistant", "content": f"{a} + {b} = {a + b}."},
                    {"role": "user", "content": "And the answer in a box?"},
                    {"role": "assistant", "content": f"\\boxed{{{a + b}}}"},
                ],
            }
        )
    return rows


def numina_rows() -> list[dict[str, Any]]:
    """NuminaMath-CoT: source, problem, solution and the same as `messages`."""
    rows = []
    for a, b in ((11, 12), (13, 14)):
        problem = f"Compute ${a} + {b}$."
        solution = f"We add: ${a} + {b} = {a + b}$. The answer is $\\boxed{{{a + b}}}$."
        rows.append(
            {
                "source": "synthetic_math",
                "problem": problem,
                "solution": solution,
                "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}],
            }
        )
    return rows


def trl_prompt_completion_rows() -> list[dict[str, Any]]:
    """TRL's conversational prompt-completion (with a reference under seqdistill's own name)."""
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
            "completion": [{"role": "assistant", "content": f"It is \\boxed{{{_sum(a, b, wrong=a == 6)}}}."}],
            "reference": str(a + b),
            "difficulty": "easy",
        }
        for a, b in ((5, 5), (6, 6), (7, 7))
    ]


def trl_standard_rows() -> list[dict[str, Any]]:
    """TRL's standard (string) prompt-completion."""
    return [{"prompt": f"{a} + {b} =", "completion": f" {a + b}"} for a, b in ((1, 1), (2, 2))]


def write_rows(rows: list[dict[str, Any]], path: Path, kind: str) -> str:
    """Write rows as JSONL, Parquet or a `save_to_disk` dir (`dict`: a DatasetDict with a train split)."""
    import datasets

    datasets.disable_progress_bars()
    if kind == "jsonl":
        return str(write_jsonl(path.with_suffix(".jsonl"), rows))
    ds = datasets.Dataset.from_list(rows)
    if kind == "parquet":
        target = path.with_suffix(".parquet")
        ds.to_parquet(str(target))
        return str(target)
    target = path.with_suffix("")
    (datasets.DatasetDict({"train": ds}) if kind == "dict" else ds).save_to_disk(str(target))
    return str(target)
