"""What gap 100 held-out prompts can detect: the power of the exact McNemar test (p < 0.05) by simulation.

Two models on the same N prompts differ on a share q of them (the discordant prompts); the gap is the difference
in accuracy. Each simulated eval draws which prompts go which way, then runs `stats.mcnemar_exact`.

    .venv/bin/python bench/mcnemar_power.py            # N = 100, 4000 simulations per cell, seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from seqdistill.stats import mcnemar_exact  # noqa: E402


def power(n: int, discordant: float, gap: float, sims: int, rng) -> float:
    """Share of simulated evals where McNemar's exact test gives p < 0.05."""
    a_only, b_only = (discordant + gap) / 2, (discordant - gap) / 2
    hits = 0
    for _ in range(sims):
        u = rng.random(n)
        b = int((u < a_only).sum())
        c = int(((u >= a_only) & (u < a_only + b_only)).sum())
        hits += mcnemar_exact(b, c) < 0.05
    return hits / sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--sims", type=int, default=4000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    gaps = (0.05, 0.10, 0.15, 0.20)
    print("| prompts that differ | " + " | ".join(f"gap {g:.0%}" for g in gaps) + " |")
    print("|---|" + "---:|" * len(gaps))
    for q in (0.2, 0.3):
        cells = [f"{power(args.prompts, q, g, args.sims, rng):.2f}" for g in gaps]
        print(f"| {q:.0%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
