"""Generate the bundled arithmetic prompt set (seeded): train and held-out splits with reference answers.

    python prompts/arithmetic/make_prompts.py     # rewrites train.jsonl, heldout.jsonl, worked_examples.jsonl

Questions are additions and subtractions of one- and two-digit numbers; the held-out split shares no
question with the train split or the worked examples.
"""

import json
import random
from pathlib import Path

SEED = 1234
N_TRAIN = 400
N_HELDOUT = 100
HERE = Path(__file__).parent


def question(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(1, 30), rng.randint(1, 30)
    if rng.random() < 0.7:
        return f"What is {a} + {b}?", a + b
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", a - b


def main() -> None:
    rng = random.Random(SEED)
    examples = [
        {"question": "What is 3 + 5?", "completion": "3 + 5 = 8. The answer is \\boxed{8}."},
        {"question": "What is 12 + 7?", "completion": "12 + 7 = 19. The answer is \\boxed{19}."},
        {"question": "What is 15 - 6?", "completion": "15 - 6 = 9. The answer is \\boxed{9}."},
    ]
    seen = {e["question"] for e in examples}
    rows = []
    while len(rows) < N_TRAIN + N_HELDOUT:
        q, answer = question(rng)
        if q in seen:
            continue
        seen.add(q)
        rows.append({"question": q, "answer": str(answer)})
    splits = {"train": rows[:N_TRAIN], "heldout": rows[N_TRAIN:]}
    for name, split in splits.items():
        with (HERE / f"{name}.jsonl").open("w") as f:
            for i, row in enumerate(split):
                f.write(json.dumps({"id": f"arith-{name}-{i:04d}", **row}) + "\n")
    with (HERE / "worked_examples.jsonl").open("w") as f:
        for e in examples:
            f.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    main()
