"""report: a self-contained HTML page, PNG figures and a dataset card from a run dir; missing parts say why."""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from seqdistill import stats
from seqdistill.cli import app
from seqdistill.stages import pipeline, report
from tests.conftest import make_sample, write_jsonl

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = {"funnel": "Filter funnel", "lengths": "Completion lengths", "loss": "Training loss",
            "accuracy": "Held-out accuracy"}  # fmt: skip
EVIL = 'I think <script>alert("x")</script> so the answer is \\boxed{42}, as 40 + 2 = 42 & 42 > 41.'
TEXTS = ["The answer is \\boxed{42}.", "40 + 2 = 42. \\boxed{42}", "Two words", EVIL]


def make_run(root: Path, *, train: bool = True, evals: bool = True, name: str = "r1") -> Path:
    """A finished run dir as `seqdistill run` leaves it, paths in summary.json relative to the run's cwd.

    The student base model is a path that does not exist, so the report counts words without loading
    transformers (the fast fallback).
    """
    run = root / "runs" / name
    write_jsonl(run / "kept.jsonl", [make_sample(f"p{i}", 0, text) for i, text in enumerate(TEXTS)])
    funnel = [
        {"rule": "truncated", "in": 7, "dropped": 1, "kept": 6, "examples": []},
        {"rule": "wrong_answer", "in": 6, "dropped": 2, "kept": 4,
         "examples": [{"id": "x", "reason": "answer 7 != reference 42 <b>", "completion": EVIL}]},
    ]  # fmt: skip
    rel = f"runs/{name}"
    filt = {"input": f"{rel}/samples.jsonl", "output": f"{rel}/kept.jsonl", "report": f"{rel}/kept.report.json",
            "total": 7, "kept": 4, "funnel": funnel,
            "answer_check": {"name": "math", "correct": 4, "wrong": 3}}  # fmt: skip
    (run / "kept.report.json").write_text(json.dumps(filt))
    gen = {"output": f"{rel}/samples.jsonl", "prompts": 4, "requested": 7, "generated": 7, "truncated": 1,
           "failed": 0, "interrupted": False}  # fmt: skip
    summary = {"run_dir": rel, "generate": gen, "filter": filt}
    if train:
        summary["train"] = {
            "model": str(root / "no-such-model"), "output": f"{rel}/student", "examples": 4, "epochs": 1.0,
            "steps": 4, "loss_history": [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3, 4)],
            "eval_loss": 0.9, "seconds": 1.5,
            "kd": {"k": 5, "alpha": 0.5, "temperature": 2.0, "coverage": 0.91},
        }  # fmt: skip
        (run / "student").mkdir()
        (run / "student" / "training_report.json").write_text(json.dumps(summary["train"]))
    if evals:
        summary["eval"] = {k: eval_result(k, right, m) for k, (right, m) in EVAL_RESULTS.items()}
        summary["comparisons"] = pipeline.comparisons(summary["eval"])
    (run / "summary.json").write_text(json.dumps(summary))
    return run


# per eval: which of the 4 held-out prompts it got right (one sample each), and its majority accuracy
EVAL_RESULTS = {"teacher": ((1, 1, 1, 0), 1.0), "student_before": ((1, 0, 0, 0), None),
                "student_after": ((1, 1, 0, 0), 0.5)}  # fmt: skip


def eval_result(model: str, right: tuple[int, ...], majority: float | None) -> dict:
    """What `eval` returns for one sample per prompt: counts, accuracy with its Wilson interval, per-prompt scores."""
    acc = stats.accuracy({f"h{i}": (r, 1) for i, r in enumerate(right)})
    return {"model": model, "samples": acc.total, "correct": acc.correct, "wrong": acc.total - acc.correct,
            "unverifiable": 0, "accuracy": acc.value, "accuracy_ci": [acc.ci_low, acc.ci_high],
            "ci_method": acc.method, "majority_accuracy": majority,
            "per_prompt": {f"h{i}": [r, 1] for i, r in enumerate(right)}}  # fmt: skip


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data.startswith(PNG_SIGNATURE)
    with Image.open(BytesIO(data)) as im:
        im.verify()
        return im.size


def test_report_is_one_self_contained_page_with_four_figures(tmp_path):
    run = make_run(tmp_path)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    for key, title in SECTIONS.items():
        assert f'<section id="{key}"><h2>{title}' in page
    assert "not available" not in page
    images = embedded_pngs(page)
    assert len(images) == 4
    for key, data in zip(SECTIONS, images, strict=True):
        width, height = png_size(data)
        assert width > 0 and height > 0
        assert (run / "report" / f"{key}.png").read_bytes() == data  # the PNG files are the page's figures
    # nothing fetched from elsewhere: no external src/href, no CSS url()/@import, no scripts at all
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert "url(" not in page and "@import" not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # the longest completion, escaped
    assert "reference 42 &lt;b&gt;" in page  # a funnel reason, escaped
    assert "whitespace-separated words" in page  # the student model does not exist: words, said so
    assert "kd_alpha 0.5, T 2.0, top-5, 91% of supervised tokens" in page  # soft-target training, summarised


def test_dataset_card_names_the_data_and_its_size(tmp_path):
    run = make_run(tmp_path)
    result = report.run(str(run))
    card = run / "README.md"
    assert result["card"] == str(card)
    text = card.read_text(encoding="utf-8")
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["configs"] == [{"config_name": "default", "data_files": "kept.jsonl"}]
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert meta["tags"] == ["distillation", "synthetic", "seqdistill"]
    assert report.CARD_MARKER in body and "**4 samples**" in body and "7 generated, 4 kept" in body
    assert "| wrong_answer | 6 | 2 | 4 |" in body and 'load_dataset("json", data_files="kept.jsonl"' in body
    import datasets

    # the card's config makes the directory itself a dataset: only kept.jsonl, not the other JSON files
    ds = datasets.load_dataset(str(run), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 4 and ds[3]["completion"][0]["content"] == EVIL


def test_a_readme_seqdistill_did_not_write_is_left_alone(tmp_path, caplog):
    run = make_run(tmp_path)
    (run / "README.md").write_text("# my notes\n")
    with caplog.at_level(logging.WARNING):
        result = report.run(str(run))
    assert result["card"] == str(run / "DATASET_CARD.md")
    assert (run / "README.md").read_text() == "# my notes\n"
    assert "not written by seqdistill" in caplog.text
    (run / "README.md").unlink()
    assert report.run(str(run))["card"] == str(run / "README.md")
    assert report.run(str(run))["card"] == str(run / "README.md")  # its own card is rewritten in place


def test_missing_parts_say_not_available_and_leave_no_stale_figure(tmp_path):
    run = make_run(tmp_path)
    report.run(str(run))
    make_run(tmp_path, train=False, evals=False)  # the same dir, now without training or evals
    shutil.rmtree(run / "student")
    result = report.run(str(run))
    assert set(result["missing"]) == {"loss", "accuracy"}
    assert sorted(p.name for p in (run / "report").glob("*.png")) == ["funnel.png", "lengths.png"]
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    for key in ("loss", "accuracy"):
        section = page.split(f'<section id="{key}">')[1].split("</section>")[0]
        assert "not available</strong>: no " in section and "<img" not in section
    assert len(embedded_pngs(page)) == 2


def test_an_interrupted_eval_is_named_and_the_others_shown(tmp_path):
    run = make_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["eval"]["student_after"] = {"interrupted": True, "generated": 1}
    del summary["train"]  # the training report is then read from the student dir
    (run / "summary.json").write_text(json.dumps(summary))
    result = report.run(str(run))
    assert result["missing"] == {}
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "student after: interrupted" in page and "75.0%" in page and "25.0%" in page


def accuracy_part(run: Path) -> str:
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    return page.split('<section id="accuracy">')[1].split("</section>")[0]


def test_accuracy_table_has_the_intervals_and_the_paired_differences(tmp_path):
    run = make_run(tmp_path)
    report.run(str(run))
    section = accuracy_part(run)
    low, high = stats.wilson_interval(3, 4)  # the teacher: 3 of 4 prompts
    assert f"{low:.1%} – {high:.1%} (wilson)" in section and "<th>95% CI</th>" in section
    assert "error bars" in section and "<th>majority accuracy</th>" in section  # the teacher's vote is measured
    # the trained student (prompts 0, 1 right) against the student before (0) and the teacher (0, 1, 2)
    after_before = stats.compare({"0": (1, 1), "1": (1, 1), "2": (0, 1), "3": (0, 1)},
                                 {"0": (1, 1), "1": (0, 1), "2": (0, 1), "3": (0, 1)})  # fmt: skip
    row = section.split("<td>student after − student before</td>")[1].split("</tr>")[0]
    assert f"+25.0 pts [{100 * after_before.ci_low:+.1f}, {100 * after_before.ci_high:+.1f}] (newcombe-paired)" in row
    assert "<td>1 (mcnemar-exact)</td>" in row  # one discordant prompt: no evidence at all
    row = section.split("<td>student after − teacher</td>")[1].split("</tr>")[0]
    assert "-25.0 pts [" in row and '<td class="num">0</td><td class="num">1</td>' in row  # a_better, b_better


def test_no_majority_column_or_bar_when_it_equals_the_accuracy(tmp_path):
    run = make_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    for r in summary["eval"].values():
        r["majority_accuracy"] = None  # what eval writes for greedy, n = 1
    (run / "summary.json").write_text(json.dumps(summary))
    report.run(str(run))
    section = accuracy_part(run)
    assert "majority" not in section
    fig = report._figure(8, 4)
    ax = fig.subplots()
    report.draw_accuracy(ax, summary["eval"], list(summary["eval"]))
    assert len(ax.patches) == 3  # one bar per model, no second series
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["accuracy", "95% CI"]


def test_accuracy_figure_draws_each_interval_as_an_error_bar(tmp_path):
    from matplotlib.container import ErrorbarContainer

    evals = json.loads((make_run(tmp_path) / "summary.json").read_text())["eval"]
    fig = report._figure(8, 4)
    ax = fig.subplots()
    report.draw_accuracy(ax, evals, list(evals))
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = bars.lines[2][0].get_segments()
    assert [(seg[0][1], seg[1][1]) for seg in segments] == [
        pytest.approx(tuple(evals[k]["accuracy_ci"])) for k in evals
    ]
    labels = [t.get_text() for t in ax.texts]
    assert labels[:3] == ["75%", "25%", "50%"]  # the values, written above the error bars
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["accuracy", "95% CI", "majority accuracy"]


def test_a_summary_from_before_intervals_still_renders(tmp_path):
    run = make_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    for r in summary["eval"].values():
        del r["accuracy_ci"], r["ci_method"], r["per_prompt"]
    del summary["comparisons"]
    (run / "summary.json").write_text(json.dumps(summary))
    assert report.run(str(run))["missing"] == {}
    section = accuracy_part(run)
    assert "75.0%" in section and "paired difference" not in section and "<img" in section


def test_summary_paths_resolve_inside_a_moved_run_dir(tmp_path, monkeypatch):
    decoy = make_run(tmp_path / "cwd", name="r1")  # what summary's 'runs/r1/kept.jsonl' means from the cwd
    write_jsonl(decoy / "kept.jsonl", [make_sample("other")])
    moved = make_run(tmp_path / "elsewhere", name="r1")
    monkeypatch.chdir(tmp_path / "cwd")
    report.run(str(moved))
    assert "**4 samples**" in (moved / "README.md").read_text(encoding="utf-8")


def test_student_tokenizer_is_used_when_it_loads(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    run = make_run(tmp_path)
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits punctuation: more tokens than words
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(run / "student")
    report.run(str(run))
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "tokens (trained student&#x27;s tokenizer" in page
    assert "Longest kept completion (31)" in page  # EVIL in word/punctuation pieces (it has 18 words)


@pytest.mark.parametrize("make", [lambda p: p / "nope", lambda p: p])
def test_no_run_dir_or_summary_is_one_line_error(tmp_path, make):
    result = runner.invoke(app, ["report", str(make(tmp_path))])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert str(tmp_path) in result.output and "seqdistill run --config" in result.output


# Injected into a copy of the page (the report itself has no scripts): reports resource and script errors
# to the console, and writes how many images decoded into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('error', (e) => {
  const url = e.target && (e.target.src || e.target.href);
  console.error('page error: ' + (url ? 'failed to load ' + url : e.message));
}, true);
window.addEventListener('load', () => {
  const bad = [...document.images].filter((i) => !i.complete || i.naturalWidth === 0);
  document.documentElement.setAttribute('data-images', document.images.length + ' decoded, ' + bad.length + ' broken');
});
</script>"""
# chromium's own noise here (dbus, vaapi, sandbox warnings) never matches these; page problems do
PAGE_ERRORS = re.compile(r"CONSOLE|Uncaught|net::ERR_|Failed to load resource")


def test_page_renders_in_headless_chromium(tmp_path):
    names = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
    browser = next((path for name in names if (path := shutil.which(name))), None)
    if browser is None:
        pytest.skip("chromium not installed")
    run = make_run(tmp_path)
    report.run(str(run))
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--enable-logging=stderr", "--v=0", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network, even by mistake
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probed.as_uri()]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for title in SECTIONS.values():
        assert f"<h2>{title}" in proc.stdout
    assert 'data-images="4 decoded, 0 broken"' in proc.stdout
    assert not [line for line in proc.stderr.splitlines() if PAGE_ERRORS.search(line)]
