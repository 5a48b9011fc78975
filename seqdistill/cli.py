"""The `seqdistill` command: thin typer commands that build a config and call `stages.<x>.run(config)`.

Only this module prints. A `SeqdistillError` becomes one red line and exit code 1 (SEQDISTILL_DEBUG=1
shows the traceback); heavy libraries are imported inside commands so `--help` stays instant.
SIGTERM and SIGHUP unwind a command like Ctrl-C (exit 143 / 129, 130 for Ctrl-C); see docs/robustness.md.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from seqdistill import __version__
from seqdistill.checks.answers.registry import check_names_text
from seqdistill.config import ExportConfig, choices, load_pipeline, load_stage
from seqdistill.errors import SeqdistillError, Stopped
from seqdistill.results import FilterResult
from seqdistill.signals import stop_signals

app = typer.Typer(
    help="Sequence distillation: sample a teacher, keep the good samples, fine-tune a student.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _rank() -> int:
    """This process's rank under `torchrun` / `accelerate launch` (0 when not distributed)."""
    try:
        return int(os.environ.get("RANK") or 0)
    except ValueError:
        return 0


err = Console(stderr=True)
out = Console(quiet=_rank() != 0)  # several training processes: only rank 0 prints results

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config (stage keys or a pipeline recipe).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set sampling.temperature=0.6")
]
CheckOpt = Annotated[str | None, typer.Option(help=f"Answer check: {check_names_text()} (docs/checks.md).")]


def _setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if _rank() == 0 else logging.ERROR,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    for noisy in ("httpx", "httpx2", "openai", "datasets", "filelock", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # bitsandbytes warns on import that an optional CPU kernel for 4-bit layers is missing, even when nothing is 4-bit
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def command(fn):
    """Run a command with user errors as one red line and exit 1; a stop signal unwinds it (exit 128 + signal)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        _setup_logging()
        from seqdistill.stages.generate import Interrupted

        try:
            with stop_signals():
                fn(*args, **kwargs)
        except (SeqdistillError, Interrupted) as e:
            if os.environ.get("SEQDISTILL_DEBUG"):
                raise
            _error(str(e))
            raise typer.Exit(e.exit_code if isinstance(e, Interrupted) else 1) from None
        except KeyboardInterrupt as e:
            name = e.name if isinstance(e, Stopped) else "Ctrl-C"
            err.print(f"[bold red]interrupted[/] by {name}: finished outputs are kept; run the same command again")
            raise typer.Exit(e.exit_code if isinstance(e, Stopped) else 130) from None
        except OSError as e:  # last resort: an I/O error the stage did not name (it should raise DataError)
            if os.environ.get("SEQDISTILL_DEBUG") or (e.filename is None and e.errno not in _ENVIRONMENT_ERRNOS):
                raise
            from seqdistill.io import os_error

            _error(str(os_error(e, None, "access")))
            raise typer.Exit(1) from None
        except ModuleNotFoundError as e:  # an optional extra's library reached by a path no check guards
            from seqdistill.extras import EXTRA_OF, installed, missing_extra

            root = (e.name or "").split(".")[0]
            if os.environ.get("SEQDISTILL_DEBUG") or root not in EXTRA_OF or installed(root):
                raise  # not a missing extra: a bug, shown with its traceback
            _error(str(missing_extra(_name(fn), root)))
            raise typer.Exit(1) from None

    return wrapper


# I/O errors that say something about the machine (not a bug), worth one line even without a file name
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EMFILE, errno.ENFILE, errno.EIO}


def _error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _name(fn) -> str:
    """The command's name as typed (`train_cmd` -> `train`)."""
    return fn.__name__.removesuffix("_cmd")


def _show(title: str, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if isinstance(value, list) and value and all(isinstance(v, float) for v in value):  # e.g. accuracy_ci
            table.add_row(key, "[" + ", ".join(f"{v:.4g}" for v in value) + "]")
        elif not isinstance(value, dict | list):
            table.add_row(key, escape(f"{value:.4g}" if isinstance(value, float) else str(value)))
    out.print(table)


def _backend(backend: str | None, base_url: str | None) -> str | None:
    """The one backend rule: `--base-url` means the openai backend unless `--backend` names another."""
    return backend or ("openai" if base_url else None)


def _stopped(summary: dict[str, Any]) -> None:
    """A run stopped by a signal: say what was kept and exit 128 + the signal (130 Ctrl-C, 143 TERM, 129 HUP)."""
    if summary.get("interrupted"):
        name = summary.get("stopped_by") or "SIGINT"
        shown = "Ctrl-C" if name == "SIGINT" else name
        err.print(
            f"stopped by {shown}: {summary.get('generated', 0)} new samples kept; run the same command to resume"
        )
        raise typer.Exit(128 + signal.Signals[name])


@app.command("generate")
@command
def generate_cmd(
    config: ConfigOpt = None,
    prompts: Annotated[
        str | None, typer.Option(help="Prompt source: JSONL, Parquet, dataset dir or hub name.")
    ] = None,
    output: Annotated[str | None, typer.Option(help="Samples file (appended to; resumed from).")] = None,
    backend: Annotated[str | None, typer.Option(help="openai | transformers | vllm | auto.")] = None,
    model: Annotated[str | None, typer.Option(help="Teacher model (served name, HF dir, bundled:smollm2).")] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (the openai backend, unless --backend)."
        ),
    ] = None,
    n: Annotated[int | None, typer.Option(help="Samples per prompt.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight (openai backend).")] = None,
    shard: Annotated[str | None, typer.Option(help="I/N: this machine's deterministic 1/N of the prompts.")] = None,
    max_requests: Annotated[int | None, typer.Option(help="Budget: requests to send this run.")] = None,
    max_output_tokens: Annotated[int | None, typer.Option(help="Budget: output tokens this run.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Budget: cost this run (needs price_* keys).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send a small pilot, then project the whole run.")
    ] = False,
    mode: Annotated[
        str | None, typer.Option(help="openai backend: live | batch (a batch API) | batch-file (docs/batch.md).")
    ] = None,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel this output's open batches.")] = False,
    from_batch_output: Annotated[
        list[str] | None, typer.Option(help="Read a batch output file (OpenAI's, vllm run-batch's) into --output.")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Sample the teacher on every prompt; re-running sends only the samples still missing."""
    from seqdistill.stages import generate

    flags = {
        "prompts.source": prompts,
        "output": output,
        "backend": _backend(backend, base_url),
        "model": model,
        "base_url": base_url,
        "n": n,
        "prompts.limit": limit,
        "concurrency": concurrency,
        "shard": shard,
        "max_requests": max_requests,
        "max_output_tokens": max_output_tokens,
        "max_cost": max_cost,
        "mode": mode,
    }
    cfg = load_stage("generate", config, flags, set_)
    if cancel or from_batch_output:
        from seqdistill.stages import batch

        summary = batch.cancel(cfg) if cancel else batch.ingest(cfg, from_batch_output)
        _show("generate --cancel" if cancel else "generate --from-batch-output", summary)
        return
    if dry_run:
        projection = generate.dry_run(cfg)
        _show("generate --dry-run: pilot and projection for the rest", projection)
        if projection["remaining_samples"]:
            out.print(
                f"run again without --dry-run to generate the rest ({projection['remaining_samples']} samples; "
                "the pilot's samples are kept)"
            )
        return
    summary = generate.run(cfg)
    _show("generate", summary.to_json())
    _stopped(summary.to_json())
    if budget := summary.budget_reached:
        err.print(f"stopped at the {budget} budget; run again (with a larger budget) to continue")


@app.command("score")
@command
def score_cmd(
    input: Annotated[str | None, typer.Argument(help="Samples file whose completions the teacher scores.")] = None,
    output: Annotated[str | None, typer.Option(help="Scored samples file (appended to; resumed from).")] = None,
    backend: Annotated[str | None, typer.Option(help="openai (a vLLM server) | transformers | vllm | auto.")] = None,
    model: Annotated[str | None, typer.Option(help="Teacher model (served name, HF dir, bundled:smollm2).")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server (vLLM), e.g. :8000/v1.")] = None,
    logprobs: Annotated[int | None, typer.Option(help="Top-k per token (0: the token's own logprob only).")] = None,
    teacher_tokenizer: Annotated[str | None, typer.Option(help="Teacher tokenizer (default: the model).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight (openai backend).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The teacher's logprob (and top-k) of every completion token, into meta.logprobs; re-running resumes."""
    from seqdistill.stages import score

    flags = {
        "input": input, "output": output, "backend": _backend(backend, base_url), "model": model, "base_url": base_url,
        "logprobs": logprobs, "teacher_tokenizer": teacher_tokenizer, "concurrency": concurrency,
    }  # fmt: skip
    summary = score.run(load_stage("score", config, flags, set_))
    _show("score", summary.as_dict())
    if summary.interrupted:
        err.print(f"stopped: {summary.scored} new scored samples kept; run the same command to resume")
        raise typer.Exit(130)


@app.command("filter")
@command
def filter_cmd(
    input: Annotated[str | None, typer.Argument(help="Samples file to filter.")] = None,
    output: Annotated[str | None, typer.Option(help="Kept samples file (default <input>.kept.jsonl).")] = None,
    check: CheckOpt = None,
    workers: Annotated[int | None, typer.Option(help="Processes for answer checks (0: in this process).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Keep correct, complete, unique samples; write rejects with reasons and a funnel report."""
    from seqdistill.stages import filter

    flags = {"input": input, "output": output, "check": check, "workers": workers}
    report = filter.run(load_stage("filter", config, flags, set_))
    _show_funnel(report)


def _show_funnel(report: FilterResult) -> None:
    from rich.table import Table

    table = Table(title=f"filter: {report.total} in, {report.kept} kept")
    for col in ("rule", "in", "dropped", "kept", "example reason"):
        table.add_column(col)
    for row in report.funnel:
        example = row.examples[0]["reason"] if row.examples else ""
        table.add_row(row.rule, str(row.in_), str(row.dropped), str(row.kept), escape(example[:60]))
    out.print(table)
    out.print(f"kept -> {report.output}\nrejected -> {report.rejected}\nreport -> {report.report}")


@app.command("train")
@command
def train_cmd(
    input: Annotated[str | None, typer.Argument(help="Kept samples file.")] = None,
    model: Annotated[str | None, typer.Option(help="Student model (HF dir, hub id, bundled:smollm2).")] = None,
    output: Annotated[str | None, typer.Option(help="Output directory for the trained student.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only run the pre-flight check of data and template.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fine-tune the student on the kept samples (TRL SFTTrainer, loss on completions only)."""
    from seqdistill.stages import train

    cfg = load_stage("train", config, {"input": input, "model": model, "output": output}, set_)
    if check:
        report = train.check(cfg)
        example = report.pop("example", None)
        _show("train --check: pre-flight passed", report)
        if example is not None:
            out.print("example 1 as the student sees it; the loss is computed on the text inside ⟦ ⟧:", style="bold")
            from rich.text import Text

            text = Text(example)  # not markup: the example is untrusted text
            text.highlight_regex(r"⟦[^⟦⟧]*⟧", "reverse green")
            out.print(text, highlight=False)
        return
    report = train.run(cfg)
    _show("train", report.to_json())


@app.command("eval")
@command
def eval_cmd(
    prompts: Annotated[str | None, typer.Option(help="Prompts with reference answers.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Local model (transformers) or served name with --base-url.")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="Evaluate a model behind an OpenAI-compatible server.")] = None,
    check: CheckOpt = None,
    n: Annotated[int | None, typer.Option(help="Samples per prompt.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    output: Annotated[str | None, typer.Option(help="Per-sample results file (resumable).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Accuracy of a model on prompts with reference answers, checked like the filter checks."""
    from seqdistill.stages import evaluate

    flags = {
        "prompts.source": prompts,
        "model": model,
        "base_url": base_url,
        "check": check,
        "n": n,
        "prompts.limit": limit,
        "output": output,
        "backend": _backend(None, base_url),
    }
    summary = evaluate.run(load_stage("eval", config, flags, set_)).to_json()
    _stopped(summary)
    _show("eval", summary)


@app.command("run")
@command
def run_cmd(
    config: Annotated[str | None, typer.Option("--config", "-c", help="Pipeline recipe (YAML).")] = None,
    set_: SetOpt = None,
    force: Annotated[
        list[str] | None,
        typer.Option(help="Redo this stage even if its output is unchanged: generate|filter|eval|train|reference."),
    ] = None,
    print_recipe: Annotated[
        str | None, typer.Option("--print-recipe", metavar="RUN_DIR", help="Print the recipe of what RUN_DIR holds.")
    ] = None,
) -> None:
    """The whole pipeline: generate -> filter -> eval teacher/student -> train -> eval student.

    A stage whose output exists with the same settings and inputs is reused; the log says why each is redone."""
    from seqdistill.stages import pipeline

    if print_recipe:
        import yaml

        text = yaml.safe_dump(pipeline.recipe(print_recipe), sort_keys=False)
        out.print(text, end="", markup=False, highlight=False, soft_wrap=True)  # YAML as it is: no wrapping
        return
    if not config:
        raise SeqdistillError("run needs a recipe: --config RECIPE.yaml (or --print-recipe RUN_DIR to write one)")
    summary = pipeline.run(load_pipeline(config, set_), force=frozenset(force or ()))
    for stage in (summary["generate"], *summary.get("eval", {}).values()):
        _stopped(stage)
    out.print(summary_table(summary))
    if table := (summary.get("recipes") or {}).get("markdown"):  # the recipes side by side (recipes.json)
        out.print(table, markup=False, highlight=False, soft_wrap=True)


@app.command("report")
@command
def report_cmd(
    run_dir: Annotated[str, typer.Argument(help="A pipeline run dir (holds summary.json), e.g. runs/demo.")],
    max_samples: Annotated[
        int,
        typer.Option(
            min=1,
            help="Explorer page: at most this many samples per category (kept, each reject "
            "rule, each model's answers), chosen by hash; counts of the whole are shown.",
        ),
    ] = 2000,  # seqdistill.viewer.DEFAULT_MAX_SAMPLES (not imported here: --help stays light)
) -> None:
    """One HTML page (funnel, lengths, loss, accuracy), its figures as PNGs and a dataset card for a run."""
    from seqdistill.stages import report

    result = report.run(run_dir, max_samples=max_samples)
    out.print(f"report -> {result['html']}")
    out.print(f"explorer -> {result['explore']} (open it in a browser: samples, rejects, answers)")
    if figures := [Path(f) for f in result["figures"].values()]:
        out.print(f"figures -> {figures[0].parent}: {', '.join(f.name for f in figures)}")
    out.print(f"dataset card -> {result['card']}" if result["card"] else "dataset card: not written (see above)")
    for key, why in result["missing"].items():
        err.print(f"{key}: not available ({escape(why)})", highlight=False)


@app.command("export")
@command
def export_cmd(
    input: Annotated[str | None, typer.Argument(help="Kept samples (any shape filter reads).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Folder to write; load it with load_dataset(DIR).")] = None,
    format: Annotated[
        str | None, typer.Option(help=" | ".join(choices(ExportConfig.model_fields["format"].annotation)))
    ] = None,
    test_size: Annotated[float | None, typer.Option(help="Share of the prompts held out as a test split.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split.")] = None,
    push_to_hub: Annotated[str | None, typer.Option(help="Also upload to this Hub dataset repo (owner/name).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier export in --to.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write kept samples as a dataset folder with its card (train/test splits when asked); optionally upload it."""
    from seqdistill.stages import export

    flags = {
        "input": input, "to": to, "format": format, "test_size": test_size, "seed": seed, "push_to_hub": push_to_hub,
        "private": private or None, "overwrite": overwrite or None,
    }  # fmt: skip
    result = export.run(load_stage("export", config, flags, set_))
    out.print(f"export ({result.format}) -> {result.to}: " + ", ".join(f"{k} {n}" for k, n in result.splits.items()))
    out.print(f"dataset card -> {result.card}")
    if result.pushed:
        out.print(f"uploaded -> https://huggingface.co/datasets/{result.pushed}")


def summary_table(summary: dict[str, Any]):
    """The pipeline's one-screen summary: data funnel, training, held-out accuracy before -> after."""
    from rich.table import Table

    from seqdistill.stats import Comparison, format_interval

    table = Table(title=f"seqdistill run: {summary['run_dir']}", show_header=False)
    table.add_column(no_wrap=True)  # the row names stay whole on a narrow terminal; the values wrap
    table.add_column()
    g, f = summary["generate"], summary.get("filter", {})
    table.add_row("prompts", str(g["prompts"]))
    present = g.get("samples", g["requested"])  # what the samples file holds, whichever run wrote it
    new, cut = g.get("generated_this_run", g["generated"]), g["truncated"]
    table.add_row("samples", f"{present} of {g['requested']} requested ({new} new this run, {cut} truncated)")
    for row in f.get("funnel", []):
        table.add_row(f"  dropped: {row['rule']}", str(row["dropped"]))
    table.add_row("kept", str(f.get("kept")))
    if t := summary.get("train"):
        table.add_row("train examples / tokens", f"{t['examples']} / {t['tokens']}")
        table.add_row("train loss first -> last", f"{_num(t['first_loss'])} -> {_num(t['last_loss'])}")
        table.add_row("train time", f"{t['seconds']}s ({t['tokens_per_s']} tokens/s)")
    e = summary.get("eval", {})

    def acc(name: str) -> str:
        r = e.get(name)
        if not r or r.get("accuracy") is None:
            return "-"
        low, high = r.get("accuracy_ci") or (None, None)
        return f"{format_interval(r['accuracy'], low, high)} ({r['correct']}/{r['samples']})"

    if e:
        table.add_row("held-out accuracy: teacher", acc("teacher"))
        table.add_row("held-out accuracy: student", f"{acc('student_before')} -> {acc('student_after')}")
        if "student_reference" in e:
            table.add_row("held-out accuracy: student on reference answers", acc("student_reference"))
    for stage, done in (summary.get("invocation") or {}).items():  # what this run reused, and why it redid the rest
        table.add_row(f"this run: {stage}", escape(f"{done['action']} ({done['why']})"))
    comparisons = [Comparison(**c) for c in summary.get("comparisons") or []]
    for c in comparisons:  # a - b on the prompts both answered, with the paired test
        table.add_row(f"paired: {c.a.replace('_', ' ')} - {c.b.replace('_', ' ')}", str(c))
    methods = sorted({r["ci_method"] for r in e.values() if isinstance(r, dict) and r.get("accuracy_ci")})
    methods += sorted({f"{c.ci_method} + {c.test}" for c in comparisons if c.difference is not None})
    if methods:
        table.add_row("95% CI, paired test", ", ".join(methods) + " (docs/statistics.md)")
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def version_callback(value: bool) -> None:
    if value:
        out.print(f"seqdistill {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True)] = False,
) -> None:
    """seqdistill: sequence distillation, one stage per command."""


def main() -> None:
    app(prog_name="seqdistill")


if __name__ == "__main__":
    sys.exit(main())
