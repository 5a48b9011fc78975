"""The explorer page (report/explore.html): data step in Python, behaviour in headless Chromium.

Browser tests drive Debian's chromium through Playwright (`executable_path`; Playwright's own browser
download cannot run here) and skip when either is missing. One browser for the module; a failing
browser test saves screenshots of the page under its tmp_path and prints their paths.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.records import Sample
from seqdistill.stages import report
from seqdistill.viewer import data as vdata
from tests.conftest import make_sample, write_jsonl

runner = CliRunner()
# Untrusted text as a teacher might write it: each piece would set window.__pwned if it ever ran.
EVIL = (
    "<script>window.__pwned = 'script'</script></textarea></script><script>window.__pwned = 'close'</script>"
    "<img src=x onerror=\"window.__pwned = 'img'\"><svg onload=\"window.__pwned = 'svg'\"></svg>"
    "[click](javascript:window.__pwned='md') <a href=\"javascript:window.__pwned='a'\">link</a>"
    " <!-- \u2028\u2029 &amp;"
)
MODELS = ("teacher", "student_before", "student_after", "student_reference")


def teacher_sample(pid: str, i: int, text: str, *, result: str | None = "correct", **meta) -> dict:
    check = {"name": "math", "result": result, "answer": "42" if result == "correct" else "7"} if result else None
    return make_sample(pid, i, text, meta={**({"check": check} if check else {}), **meta})


def rejected(pid: str, i: int, text: str, rule: str, reason: str, result: str | None = "wrong") -> dict:
    return teacher_sample(pid, i, text, result=result, rejected={"rule": rule, "reason": reason})


# held-out prompt -> answer of each model (teacher, before, after, reference); the reference answer is 42
HELDOUT = {
    "h1": ("\\boxed{42}", "\\boxed{41}", "so \\boxed{42}", "\\boxed{42}"),  # after fixed what before got wrong
    "h2": ("\\boxed{42}", "\\boxed{40}", "\\boxed{43}", "\\boxed{42}"),  # after wrong
    "h3": ("\\boxed{42}", "\\boxed{42}", "\\boxed{42}", "\\boxed{42}"),  # all right
    "h4": ("\\boxed{42}", "\\boxed{42}", "no idea", "\\boxed{42}"),  # after lost it (unverifiable)
}


def make_viewer_run(root: Path, *, evil: bool = False) -> Path:
    """A finished run dir: kept and rejected samples, and four models' answers on held-out prompts.

    The student_reference answer to h3 carries eval's own verdict (`meta.check`), deliberately "wrong":
    the page must show it as written, where the others are recomputed.
    """
    run = root / "runs" / "v1"
    kept = [
        teacher_sample("p1", 0, "<think>add 40 and 2</think>The answer is \\boxed{42}.", pass_rate=0.5),
        teacher_sample("p2", 0, "40 + 2 = 42, so \\boxed{42}."),
        teacher_sample(
            "p3", 1, "Half is $\\frac{1}{2}$ and \\boxed{42}, not \\boxed{}.\n```python\nprint(40 + 2)\n```"
        ),
    ]
    rejects = [rejected("p1", 1, "It is \\boxed{7}.", "wrong_answer", "answer 7 != reference 42"),
               rejected("p2", 1, "\\boxed{8}", "wrong_answer", "answer 8 != reference 42"),
               rejected("p3", 0, "zebra crossing: \\boxed{9}", "wrong_answer", "answer 9 != reference 42"),
               rejected("p4", 0, "The answer is", "truncated", "finish_reason length", result=None),
               rejected("p4", 1, "I think", "truncated", "finish_reason length", result=None)]  # fmt: skip
    if evil:
        kept.append(teacher_sample("<b>p9</b>", 0, EVIL, pass_rate=1.0))
        kept[-1]["completion"][0]["reasoning_content"] = EVIL
        kept[-1]["prompt"] = [{"role": "user", "content": EVIL}]
        kept[-1]["reference"] = EVIL
        rejects.append(rejected("<b>p9</b>", 1, EVIL, "wrong_answer", EVIL))
    write_jsonl(run / "kept.jsonl", kept)
    write_jsonl(run / "kept.rejected.jsonl", rejects)
    rel = "runs/v1"
    funnel = [{"rule": "truncated", "in": 8, "dropped": 2, "kept": 6},
              {"rule": "wrong_answer", "in": 6, "dropped": 3, "kept": 3}]  # fmt: skip
    filt = {"output": f"{rel}/kept.jsonl", "rejected": f"{rel}/kept.rejected.jsonl", "total": 8, "kept": 3,
            "funnel": funnel, "answer_check": {"name": "math", "correct": 3, "wrong": 3}}  # fmt: skip
    evals = {}
    for m, key in enumerate(MODELS):
        rows = []
        for pid, answers in HELDOUT.items():
            row = make_sample(pid, 0, answers[m], prompt=[{"role": "user", "content": f"Held-out {pid}: 40 + 2?"}])
            if key == "student_reference" and pid == "h3":
                row["meta"]["check"] = {"result": "wrong", "answer": "42", "reason": "as eval wrote it"}
            rows.append(row)
        name = f"eval-{key.replace('_', '-')}.jsonl"
        write_jsonl(run / name, rows)
        evals[key] = {"model": f"model-{key}", "samples": 4, "accuracy": 0.5, "output": f"{rel}/{name}"}
    evals["student_after"]["accuracy_ci"] = [0.15, 0.85]
    summary = {"run_dir": rel, "filter": filt, "eval": evals,
               "train": {"model": str(root / "no-such-model"), "output": f"{rel}/student",
                         "loss_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))


# ---- the page as written (no browser) ---------------------------------------------------------------------------


def test_report_writes_the_explorer_and_links_it(tmp_path):
    run = make_viewer_run(tmp_path)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    explore = run / "report" / "explore.html"
    assert f"explorer -> {explore}" in result.output.replace("\n", "")
    assert '<a href="explore.html">' in (run / "report" / "report.html").read_text(encoding="utf-8")
    d = page_data(explore)
    assert {c["id"] for c in d["samples"]} == {json.loads(x)["id"] for f in ("kept", "kept.rejected")
                                              for x in (run / f"{f}.jsonl").read_text().splitlines()}  # fmt: skip
    assert d["counts"]["kept"] == 3 and d["counts"]["rejected"] == {"truncated": 2, "wrong_answer": 3}
    assert [m["key"] for m in d["evals"]] == list(MODELS)
    assert d["prompts"]["p1"]["stats"] == {"samples": 2, "kept": 1, "rejected": 1, "correct": 1, "wrong": 1,
                                           "unverifiable": 0, "pass_rate": 0.5}  # fmt: skip
    card = next(c for c in d["samples"] if c["id"].startswith("p3-0"))
    assert card["rule"] == "wrong_answer" and card["reason_group"] == "answer N != reference N"
    assert card["src"] == "kept.rejected.jsonl:3"


def test_eval_verdicts_use_evals_own_check_as_written_else_recompute(tmp_path):
    run = make_viewer_run(tmp_path)
    report.run(str(run))
    d = page_data(run / "report" / "explore.html")
    verdicts = {(m["key"], a["prompt_id"]): (a["verdict"], a["answer"], a["reason"]) for m in d["evals"]
                for a in m["answers"]}  # fmt: skip
    assert verdicts["student_reference", "h3"] == ("wrong", "42", "as eval wrote it")  # as written, not recomputed
    assert verdicts["student_after", "h1"][:2] == ("correct", "42")
    assert verdicts["student_after", "h2"][:2] == ("wrong", "43")
    assert verdicts["student_after", "h4"][0] == "unverifiable"
    assert verdicts["student_after", "h4"][2].startswith("recomputed by the viewer")
    sample = Sample.model_validate(make_sample("x", 0, "print(1)"))
    assert vdata.verdict(sample, "code") == (None, None, "no verdict recorded, and the 'code' check is not "
                                             "recomputed by the viewer")  # never runs a program  # fmt: skip


def test_embedded_text_cannot_end_its_script_block(tmp_path):
    run = make_viewer_run(tmp_path, evil=True)
    report.run(str(run))
    text = (run / "report" / "explore.html").read_text(encoding="utf-8")
    assert text.count("</script>") == 2  # the data block's end and the page script's end: none from a sample
    assert text.lower().count("<script") == 2 and "\u2028" not in text and "\u2029" not in text
    d = page_data(run / "report" / "explore.html")
    card = next(c for c in d["samples"] if c["prompt_id"] == "<b>p9</b>" and c["cat"] == "kept")
    assert card["text"] == EVIL and card["reasoning"] == EVIL  # the JSON escapes decode back to the exact text


def test_content_security_policy_allows_only_the_pages_own_script_and_style(tmp_path):
    run = make_viewer_run(tmp_path)
    report.run(str(run))
    text = (run / "report" / "explore.html").read_text(encoding="utf-8")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text).group(1)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    script = re.search(r"<script>(.*)</script></body>", text, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)

    def sha(s: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"

    assert directives["default-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["script-src"] == sha(script) and directives["style-src"] == sha(style)
    assert "unsafe" not in csp
    # nothing is loaded from elsewhere: no src/href to another place, no CSS url()/@import
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, flags=re.I)
    assert "url(" not in text and "@import" not in text
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert forbidden not in code, forbidden


def _teacher_files(root: Path, order: list[int]) -> vdata.ViewerInputs:
    rows = [teacher_sample(f"p{i // 3}", i % 3, f"answer {i} \\boxed{{42}}") for i in range(30)]
    rej = [rejected(f"p{i // 3}", 3 + i % 3, f"bad {i}", "wrong_answer", f"answer {i}") for i in range(30)]
    write_jsonl(root / "kept.jsonl", [rows[i] for i in order])
    write_jsonl(root / "kept.rejected.jsonl", [rej[i] for i in order])
    return vdata.ViewerInputs(run_dir=root, kept=root / "kept.jsonl", rejected=root / "kept.rejected.jsonl")


def test_selection_is_capped_deterministic_and_keeps_prompts_together(tmp_path):
    forward = vdata.collect(_teacher_files(tmp_path / "a", list(range(30))), max_samples=6)
    backward = vdata.collect(_teacher_files(tmp_path / "b", list(range(29, -1, -1))), max_samples=6)
    ids = {c.id for c in forward.samples}
    assert ids == {c.id for c in backward.samples}  # the choice does not depend on file order
    kept = [c for c in forward.samples if c.cat == "kept"]
    assert len(kept) == 6 and len(forward.samples) == 12
    assert forward.counts["kept"] == 30 and forward.counts["rejected"] == {"wrong_answer": 30}  # counts of the whole
    # by prompt first: 6 kept samples are 2 whole prompts of 3, and the rejects come from the same prompts
    assert len({c.prompt_id for c in kept}) == 2
    assert {c.prompt_id for c in forward.samples if c.cat == "rejected"} == {c.prompt_id for c in kept}
    assert all(forward.prompts[c.prompt_id].stats["samples"] == 6 for c in kept)  # stats count every sample
    bigger = vdata.collect(_teacher_files(tmp_path / "c", list(range(30))), max_samples=9)
    assert ids < {c.id for c in bigger.samples}  # a larger cap only adds


def test_max_samples_flag_caps_each_category(tmp_path):
    run = make_viewer_run(tmp_path)
    result = runner.invoke(app, ["report", str(run), "--max-samples", "1"])
    assert result.exit_code == 0, result.output
    d = page_data(run / "report" / "explore.html")
    per = {}
    for c in d["samples"]:
        per[c["rule"] or "kept"] = per.get(c["rule"] or "kept", 0) + 1
    assert per == {"kept": 1, "truncated": 1, "wrong_answer": 1}
    assert [len(m["answers"]) for m in d["evals"]] == [1, 1, 1, 1]
    assert len({a["prompt_id"] for m in d["evals"] for a in m["answers"]}) == 1  # the same prompt for each model
    assert d["counts"]["max_samples"] == 1 and d["counts"]["evals"]["teacher"] == 4
    assert runner.invoke(app, ["report", str(run), "--max-samples", "0"]).exit_code != 0


def test_a_bad_line_is_named_and_the_rest_still_shown(tmp_path):
    run = make_viewer_run(tmp_path)
    with (run / "kept.rejected.jsonl").open("a") as f:
        f.write('{"id": "broken"}\n')
    report.run(str(run))
    d = page_data(run / "report" / "explore.html")
    assert any("kept.rejected.jsonl line 6" in p for p in d["problems"]), d["problems"]
    assert d["counts"]["rejected"] == {"truncated": 2, "wrong_answer": 3}


# ---- in headless Chromium ---------------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip
# Set before the page's own script runs (Playwright injects it, whatever the page's CSP): records CSP
# violations, which is where a sample's script would end up if escaping ever failed.
PROBE = "document.addEventListener('securitypolicyviolation', (e) => { (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); });"  # noqa: E501


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    names = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
    path = next((p for name in names if (p := shutil.which(name))), None)
    if path is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


class View:
    """One page of the browser, with what it logged; `shots` saves screenshots when the test fails."""

    def __init__(self, browser, tmp_path: Path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.tmp_path, self.errors = tmp_path, []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.add_init_script(PROBE)

    def open(self, page: Path, fragment: str = "") -> float:
        """Load `page` (file://) afresh at `fragment`; seconds until its script has rendered."""
        self.page.goto("about:blank")  # a new document even when only the fragment differs
        start = time.perf_counter()
        self.page.goto(page.as_uri() + fragment)
        self.page.wait_for_selector("html[data-ready='1']", timeout=60_000)
        return time.perf_counter() - start

    def wait(self, js: str, timeout: float = 20) -> None:
        """Poll the expression `js` until it is true. (Playwright's wait_for_function evaluates a string with
        eval inside the page, which the page's CSP forbids, as it should.)"""
        end = time.monotonic() + timeout
        while not self.page.evaluate(js):
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for: {js}")
            time.sleep(0.05)

    def ids(self) -> list[str]:
        return self.page.eval_on_selector_all("#cards .card", "els => els.map(e => e.dataset.id)")

    def count_text(self) -> str:
        return self.page.text_content("#count")

    @contextlib.contextmanager
    def shots(self):
        try:
            yield self
        except BaseException:
            paths = []
            for i, view in enumerate(("", "#/samples", "#/heldout")):
                with contextlib.suppress(Exception):
                    if i:
                        self.page.evaluate("h => { location.hash = h; }", view)
                    path = self.tmp_path / f"failure-{i}.png"
                    self.page.screenshot(path=str(path), full_page=True)
                    paths.append(str(path))
            print("screenshots of the failing page:", *paths, "console:", *self.errors, sep="\n  ")  # noqa: T201
            raise
        finally:
            self.page.close()


@pytest.fixture
def view(browser, tmp_path):
    return View(browser, tmp_path)


def _ids(run: Path, name: str, rule: str | None = None) -> set[str]:
    rows = [json.loads(x) for x in (run / name).read_text().splitlines()]
    return {r["id"] for r in rows if rule is None or r["meta"]["rejected"]["rule"] == rule}


def test_funnel_row_and_rule_filter_show_exactly_that_rules_rejects(view, tmp_path):
    run = make_viewer_run(tmp_path)
    page = Path(report.run(str(run))["explore"])
    with view.shots():
        view.open(page)
        view.page.click("#funnel tr[data-rule='wrong_answer'] td a")  # a funnel row -> the rejects of its rule
        view.page.wait_for_selector("html[data-view='samples']")
        assert set(view.ids()) == _ids(run, "kept.rejected.jsonl", "wrong_answer")
        assert all(
            r == "wrong_answer" for r in view.page.eval_on_selector_all(".card", "e => e.map(x => x.dataset.rule)")
        )
        assert "3 match" in view.count_text() and "of the 3 samples dropped by wrong_answer" in view.count_text()
        view.page.select_option("select[name=rule]", "truncated")
        view.wait("document.querySelectorAll('.card').length === 2")
        assert set(view.ids()) == _ids(run, "kept.rejected.jsonl", "truncated")
        view.page.select_option("select[name=rule]", "")
        view.page.select_option("select[name=cat]", "kept")
        view.wait("document.querySelectorAll('.card').length === 3")
        assert set(view.ids()) == _ids(run, "kept.jsonl")
        view.page.select_option("select[name=cat]", "")
        view.page.fill("input[name=pmin]", "0.6")  # pass rates: p1 1/2, p2 1/2, p3 1/2, p4 0/2
        view.page.dispatch_event("input[name=pmin]", "change")
        view.wait("document.querySelectorAll('.card').length === 0")
        assert view.errors == []


def test_search_finds_a_known_sample(view, tmp_path):
    run = make_viewer_run(tmp_path)
    page = Path(report.run(str(run))["explore"])
    with view.shots():
        view.open(page, "#/samples")
        assert len(view.ids()) == 8
        view.page.fill("input[name=q]", "ZEBRA")  # case-insensitive, in the completion of one reject
        view.wait("document.querySelectorAll('.card').length === 1")
        (only,) = view.ids()
        assert only.startswith("p3-0-")
        card = view.page.text_content(".card")
        assert "answer 9 != reference 42" in card and "rejected: wrong_answer" in card
        assert "1 match" in view.count_text()
        view.page.fill("input[name=q]", "reference 42")  # a reason
        view.wait("document.querySelectorAll('.card').length === 3")
        assert view.page.evaluate("location.hash").startswith("#/samples?q=reference+42")  # a link to this view
        assert view.errors == []


def test_prompt_view_shows_each_models_answer_side_by_side(view, tmp_path):
    run = make_viewer_run(tmp_path)
    page = Path(report.run(str(run))["explore"])
    with view.shots():
        view.open(page, "#/prompt?id=h1")
        cols = view.page.eval_on_selector_all(
            ".sbs .col",
            "cs => cs.map(c => [c.dataset.model, c.querySelector('.answer .verdict').textContent, "
            "c.querySelector('.answer code').textContent, c.querySelector('.answer .text').textContent])",
        )
        assert [c[0] for c in cols] == list(MODELS)
        assert [c[1] for c in cols] == ["correct", "wrong", "correct", "correct"]
        assert [c[2] for c in cols] == ["42", "41", "42", "42"]
        assert cols[2][3] == "so 42"  # the answer's text, \boxed{42} drawn as a box
        view.open(page, "#/prompt?id=h3")
        assert view.page.text_content(".col[data-model='student_reference'] .verdict") == "wrong"  # eval's own
        view.open(page, "#/heldout")
        rows = "document.querySelectorAll('table.heldout tbody tr')"
        assert view.page.evaluate(f"{rows}.length") == 4
        view.page.select_option("select[name=show]", "after_fixed")
        view.wait(f"{rows}.length === 1")
        assert view.page.get_attribute("table.heldout tbody tr", "data-prompt") == "h1"
        view.page.select_option("select[name=show]", "after_wrong")
        view.wait(f"{rows}.length === 2")
        got = view.page.eval_on_selector_all("table.heldout tbody tr", "rs => rs.map(r => r.dataset.prompt)")
        assert sorted(got) == ["h2", "h4"]
        view.page.click("table.heldout tbody tr[data-prompt='h2'] a")  # a row opens its prompt
        view.page.wait_for_selector("html[data-view='prompt']")
        assert "Held-out h2" in view.page.text_content("#app")
        view.open(page)  # the accuracy figure: an interval where summary.json has one, each bar a link
        assert "15.0% – 85.0%" in view.page.text_content("#accuracy table")
        assert view.page.evaluate("document.querySelectorAll('#accuracy line.ci').length") == 3  # one whisker
        view.page.click("#accuracy a.barlink[data-label='student after']")
        view.wait(f"{rows}.length === 2")
        assert "student after wrong or unverifiable" in view.count_text()
        view.page.fill("input[name=q]", "Held-out")  # in every prompt: the search keeps the bar's filter
        view.wait("location.hash.includes('q=Held-out')")
        assert view.page.evaluate(f"{rows}.length") == 2
        assert view.errors == []


def test_untrusted_text_renders_as_text_and_runs_nothing(view, tmp_path):
    run = make_viewer_run(tmp_path, evil=True)
    page = Path(report.run(str(run))["explore"])
    with view.shots():
        for fragment in ("", "#/samples", "#/prompt?id=%3Cb%3Ep9%3C%2Fb%3E", "#/samples?q=%3Cscript%3E", "#/heldout"):
            view.open(page, fragment)
            assert view.page.evaluate("window.__pwned") is None, fragment
            assert view.page.evaluate("window.__csp") is None, fragment  # nothing even tried to run
            assert view.page.evaluate("document.querySelectorAll('#app script, #app img, #app iframe').length") == 0
            hrefs = view.page.eval_on_selector_all("a", "as => as.map(a => a.getAttribute('href'))")
            assert all(h.startswith("#") for h in hrefs), hrefs
        view.open(page, "#/prompt?id=%3Cb%3Ep9%3C%2Fb%3E")
        text = view.page.evaluate("document.querySelector('#app').textContent")
        assert "<script>window.__pwned = 'script'</script></textarea>" in text  # shown as the text it is
        assert "<img src=x onerror=" in text and "javascript:window.__pwned='md'" in text
        assert "Prompt <b>p9</b>" in text  # the prompt id too: no element was made from its tags
        assert view.page.evaluate("[...document.querySelectorAll('#app b')].every(b => b.textContent !== 'p9')")
        assert view.errors == []


def test_reasoning_code_and_latex_render_readably(view, tmp_path):
    run = make_viewer_run(tmp_path)
    page = Path(report.run(str(run))["explore"])
    with view.shots():
        view.open(page, "#/samples?cat=kept")
        think = view.page.locator(".card[data-id^='p1-0'] details.think")
        assert think.evaluate("d => d.open") is False  # collapsed until clicked
        assert "add 40 and 2" in think.text_content() and "reasoning (12 characters)" in think.text_content()
        p3 = ".card[data-id^='p3-1']"
        assert view.page.text_content(f"{p3} .frac") == "1/2"
        assert view.page.eval_on_selector_all(f"{p3} .boxed", "bs => bs.map(b => b.textContent)") == ["42"]
        assert "not \\boxed{}." in view.page.text_content(f"{p3} > .text")  # an empty box stays as written
        assert view.page.text_content(f"{p3} .code pre code") == "print(40 + 2)"
        assert view.page.text_content(f"{p3} .code .lang") == "python"
        view.page.click(f"{p3} button.src-toggle")  # the raw text, one click away
        assert "\\frac{1}{2}" in view.page.text_content(f"{p3} pre.raw")
        assert view.errors == []


# ---- a large run ------------------------------------------------------------------------------------------------

LARGE = {"prompts": 25_000, "per_prompt": 4, "heldout": 2_000}


def write_large_run(root: Path) -> Path:
    """100,000 teacher samples (half kept, half rejected over three rules) and four models on 2,000 prompts.

    Lines are formatted from a template: building 100k records with pydantic would take longer than the test.
    """
    run = root / "big"
    run.mkdir(parents=True)
    base = make_sample("P", 0, "T")
    rules = ("wrong_answer",) * 3 + ("truncated", "unverifiable")
    with (run / "kept.jsonl").open("w") as kept, (run / "kept.rejected.jsonl").open("w") as rej:
        for p in range(LARGE["prompts"]):
            for i in range(LARGE["per_prompt"]):
                row = dict(base, id=f"s{p}-{i}", prompt_id=f"q{p}", sample_index=i,
                           prompt=[{"role": "user", "content": f"What is {p} + {i}? Think step by step."}],
                           reference=str(p + i))  # fmt: skip
                text = f"We add {p} and {i}: {p} + {i} = {p + i}. " * 4 + f"\\boxed{{{p + i + (i % 2)}}}"
                row["completion"] = [{"role": "assistant", "content": text, "reasoning_content": None}]
                if i % 2 == 0:
                    check = {"name": "math", "result": "correct", "answer": str(p + i)}
                    row["meta"] = {"check": check, "pass_rate": 0.5}
                    kept.write(json.dumps(row) + "\n")
                else:
                    rule = rules[(p + i) % len(rules)]
                    reason = f"answer {p + i + 1} != reference {p + i}"
                    row["meta"] = {"check": {"name": "math", "result": "wrong", "answer": str(p + i + 1)},
                                   "rejected": {"rule": rule, "reason": reason}}  # fmt: skip
                    rej.write(json.dumps(row) + "\n")
    evals = {}
    for key in MODELS:
        with (run / f"eval-{key}.jsonl").open("w") as f:
            for p in range(LARGE["heldout"]):
                row = dict(base, id=f"{key}-{p}", prompt_id=f"h{p}", reference=str(p))
                row["completion"] = [{"role": "assistant", "content": f"\\boxed{{{p + (p % 3 == 0)}}}"}]
                row["meta"] = {"check": {"name": "math", "result": "wrong" if p % 3 == 0 else "correct"}}
                f.write(json.dumps(row) + "\n")
        evals[key] = {"model": key, "samples": LARGE["heldout"], "accuracy": 2 / 3, "output": f"eval-{key}.jsonl"}
    funnel = [{"rule": r, "in": 0, "dropped": 0, "kept": 0} for r in ("truncated", "wrong_answer", "unverifiable")]
    summary = {"run_dir": str(run), "filter": {"total": 100_000, "kept": 50_000, "funnel": funnel}, "eval": evals}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_a_100k_sample_run_gives_a_page_that_opens_in_seconds(view, tmp_path):
    start = time.perf_counter()
    run = write_large_run(tmp_path)
    made = time.perf_counter()
    page = Path(report.run(str(run))["explore"])
    reported = time.perf_counter()
    size = page.stat().st_size
    d = page_data(page)
    assert d["counts"]["kept"] == 50_000 and sum(d["counts"]["rejected"].values()) == 50_000
    assert d["counts"]["rejected"] == {"truncated": 10_000, "unverifiable": 10_000, "wrong_answer": 30_000}
    assert len(d["samples"]) == 4 * 2000 and [len(m["answers"]) for m in d["evals"]] == [2000] * 4
    assert size < 12_000_000  # measured 6.4 MB: 16,000 records of ~400 bytes
    with view.shots():
        load = view.open(page)
        view.open(page, "#/samples?rule=wrong_answer")
        counted = view.count_text()
        assert "2,000 match" in counted and "of the 30,000 samples dropped by wrong_answer" in counted
        assert len(view.ids()) == 50  # one page of cards; the rest behind "show more"
        target = next(c for c in d["samples"] if c["rule"] == "wrong_answer")
        question = d["prompts"][target["prompt_id"]]["prompt"][0]["content"]  # unique to its prompt and index
        searched = time.perf_counter()
        view.page.fill("input[name=q]", question)
        view.wait("document.querySelector('#count').textContent.startsWith('1 match')")
        searched = time.perf_counter() - searched
        assert view.ids() == [target["id"]]
        view.open(page, "#/heldout?show=after_wrong")
        assert "667 of 2,000 held-out prompts" in view.count_text()
        assert view.errors == []
    print(  # noqa: T201  (figures for docs/viewer.md)
        f"\n100k-sample run: write {made - start:.1f} s, report incl. explorer {reported - made:.1f} s, "
        f"page {size / 1e6:.1f} MB, opened in headless Chromium in {load:.2f} s, a search answered in {searched:.2f} s"
    )
    # Measured 0.7 s to open (a 2-core machine at load 19): the bound is ~20x that, so a slow CI machine
    # cannot make it flake; the figures above are what docs/viewer.md reports.
    assert load < 15
