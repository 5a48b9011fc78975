"""Choose the on-policy recipes' settings on TRAINING prompts only (never the held-out set).

Trains candidate settings of a recipe config's on-policy recipes exactly as `seqdistill run` would
(`recipes.onpolicy_config`), under a scratch run dir, and scores each student on a slice of the training
prompt file that neither the teacher's samples nor the on-policy rounds use (by default prompts 200-299 of
prompts/arithmetic/train.jsonl; the demo samples the first 160). Prints, per candidate, the slice accuracy
with its 95% interval, the paired difference against the SFT'd student, the train-side reverse KL of the
first and last round, and the seconds.

    # first the SFT'd student the recipes start from (generate -> filter -> train, no held-out eval):
    .venv/bin/seqdistill run --config configs/demo-onpolicy-cpu.yaml --set run_dir=runs/tune \
        --set eval=null --set recipes=[] --set reference_baseline=false
    .venv/bin/python bench/onpolicy_settings.py --candidate c-lr2e-5:sft-onpolicy:learning_rate=2e-5 ...

Limits: one seed per candidate; 100 slice prompts tell apart only large differences (see docs/statistics.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from seqdistill.config import load_pipeline  # noqa: E402
from seqdistill.stages import evaluate, recipes, train  # noqa: E402
from seqdistill.stats import compare, format_interval, format_p  # noqa: E402


def _slice(cfg, run_dir: Path, start: int, stop: int) -> str:
    """Write prompts [start, stop) of the training prompt file; refuse any overlap with what is trained or held out."""
    from seqdistill.prompts import load_prompts

    source = Path(cfg.generate.prompts.source)
    rows = source.read_text(encoding="utf-8").splitlines()[start:stop]
    out = run_dir / "settings-slice.jsonl"
    tmp = out.with_name(f".{out.name}.{os.getpid()}")  # two runs side by side: each replaces it whole
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    trained = {p.id for p in load_prompts(cfg.generate.prompts)}
    held_out = {p.id for p in load_prompts(cfg.eval.prompts)}
    chosen = {json.loads(r)["id"] for r in rows}
    if chosen & (trained | held_out):
        raise SystemExit(
            f"the slice overlaps the training or held-out prompts: {sorted(chosen & (trained | held_out))[:3]}"
        )
    return str(out)


def _eval(cfg, model: str, name: str, slice_path: str, run_dir: Path) -> dict:
    ecfg = cfg.eval.model_copy(deep=True, update={"backend": "auto", "prompt": "student", "model": model,
                                                  "output": str(run_dir / f"settings-eval-{name}.jsonl")})  # fmt: skip
    ecfg.prompts.source = slice_path
    return evaluate.run(ecfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo-onpolicy-cpu.yaml")
    ap.add_argument("--run-dir", default="runs/tune")
    ap.add_argument("--slice", default="200:300", help="START:STOP lines of the training prompt file")
    ap.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="NAME:RECIPE[:KEY=VALUE,...] train keys for that recipe (onpolicy.rounds=2 for nested ones)",
    )
    ap.add_argument("--baselines", action="store_true", help="also score the untrained and the SFT'd student")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run_dir = Path(args.run_dir)
    cfg = load_pipeline(args.config, [f"run_dir={run_dir}"])
    start, stop = (int(x) for x in args.slice.split(":"))
    slice_path = _slice(cfg, run_dir, start, stop)
    rows, evals = [], {}
    if args.baselines:
        evals["untrained"] = _eval(cfg, str(cfg.train.model), "untrained", slice_path, run_dir)
        evals["sft"] = _eval(cfg, cfg.train.output, "sft", slice_path, run_dir)
    for spec in args.candidate:
        name, recipe_name, *rest = spec.split(":")
        recipe = next(r for r in cfg.recipes if r.name == recipe_name)
        overrides = dict(recipe.train)
        for item in ",".join(rest).split(",") if rest else []:
            key, value = item.split("=", 1)
            node = overrides
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
        variant = recipe.model_copy(update={"name": f"settings-{name}", "train": overrides})
        tcfg = recipes.onpolicy_config(cfg, variant)
        t0 = time.monotonic()
        report = train.run(tcfg)
        seconds = time.monotonic() - t0
        evals[name] = _eval(cfg, tcfg.output, name, slice_path, run_dir)
        kl = [r["reverse_kl"] for r in report["rounds"]]
        rows.append((name, recipe_name, overrides, kl, round(seconds)))
    print("\n| model | slice accuracy [95% CI] | vs SFT'd student, p | reverse KL by round | train s | settings |")
    print("|---|---|---|---|---|---|")
    meta = {name: (recipe, overrides, kl, s) for name, recipe, overrides, kl, s in rows}
    for name, e in evals.items():
        acc = f"{format_interval(e['accuracy'], *e['accuracy_ci'])} ({e['correct']}/{e['samples']})"
        vs = ""
        if "sft" in evals and name != "sft":
            c = compare(e["per_prompt"], evals["sft"]["per_prompt"])
            vs = f"{format_interval(c.difference, c.ci_low, c.ci_high, signed=True)}, p = {format_p(c.p_value)}"
        recipe, overrides, kl, s = meta.get(name, ("", {}, [], ""))
        print(f"| {name} | {acc} | {vs} | {', '.join(f'{k:.3f}' for k in kl)} | {s} | {recipe} {overrides or ''} |")


if __name__ == "__main__":
    main()
