"""The names of a run directory's files, and of the side files beside any stage output.

One place decides them, so stages run by hand into one directory (`generate --output D/samples.jsonl`,
`filter D/samples.jsonl --output D/kept.jsonl`, `train --output D/student`, `eval --output D/eval-….jsonl`)
and `seqdistill run` leave the same files, and `report` and the explorer find them without guessing:

    D/samples.jsonl               generate: the teacher's samples (appended, resumed)
    D/samples.manifest.json       generate: counts, settings, fingerprint (written when a run ends)
    D/samples.failures.jsonl      generate: requests that failed and are still missing
    D/kept.jsonl                  filter: the kept samples
    D/kept.rejected.jsonl         filter: the rejects, each with its rule and reason
    D/kept.report.json            filter: the funnel, counts, fingerprint
    D/student/                    train: weights, tokenizer, chat template
    D/student/training_report.json
    D/eval-<name>.jsonl           eval: one model's answers, each with its verdict (meta.check)
    D/eval-<name>.manifest.json   eval: accuracy with its interval, the model's weights id, fingerprint
    D/reference.jsonl, D/student-reference/   the reference baseline (`reference_baseline: true`)
    D/summary.json                what `run` (or `report`) found on disk, stage by stage
    D/report/                     report.html, explore.html, figures

Side files: `X.jsonl` -> `X.<kind>` (`side(Path("a/kept.jsonl"), "report.json")` is `a/kept.report.json`).
Not covered: outputs written outside the run dir are found only through the paths a summary.json records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLES = "samples.jsonl"
KEPT = "kept.jsonl"
STUDENT = "student"
TRAINING_REPORT = "training_report.json"
SUMMARY = "summary.json"
REPORT_DIR = "report"
REFERENCE = "reference.jsonl"
STUDENT_REFERENCE = "student-reference"
EVAL_PREFIX = "eval-"

# the side files of an output, by kind
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
REJECTED = "rejected.jsonl"
FILTER_REPORT = "report.json"


def side(output: str | Path, kind: str) -> Path:
    """`samples.jsonl` -> `samples.<kind>` beside it (a manifest, failures log, rejects, filter report).

    >>> str(side("runs/a/kept.jsonl", "report.json"))
    'runs/a/kept.report.json'
    """
    output = Path(output)
    return output.with_name(f"{output.stem}.{kind}")


def manifest_path(output: str | Path) -> Path:
    return side(output, MANIFEST)


def failures_path(output: str | Path) -> Path:
    return side(output, FAILURES)


def rejected_path(kept: str | Path) -> Path:
    return side(kept, REJECTED)


def filter_report_path(kept: str | Path) -> Path:
    return side(kept, FILTER_REPORT)


def training_report_path(student: str | Path) -> Path:
    return Path(student) / TRAINING_REPORT


def eval_name(role: str) -> str:
    """The eval file of a role in `seqdistill run`: `student_after` -> `eval-student-after.jsonl`.

    >>> eval_name("student_before")
    'eval-student-before.jsonl'
    """
    return f"{EVAL_PREFIX}{role.replace('_', '-')}.jsonl"


def with_weights(output: str | Path, weights: str) -> Path:
    """The eval file of another model's weights beside `output`: `eval-x.jsonl` -> `eval-x-<weights>.jsonl`.

    >>> str(with_weights("d/eval-student-after.jsonl", "1a2b3c4d"))
    'd/eval-student-after-1a2b3c4d.jsonl'
    """
    output = Path(output)
    return output.with_name(f"{output.stem}-{weights}{output.suffix}")


@dataclass(frozen=True)
class RunDir:
    """A run directory: where each stage's output (and its side files) lies inside `root`."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES

    @property
    def kept(self) -> Path:
        return self.root / KEPT

    @property
    def student(self) -> Path:
        return self.root / STUDENT

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def reference(self) -> Path:
        return self.root / REFERENCE

    @property
    def student_reference(self) -> Path:
        return self.root / STUDENT_REFERENCE

    def eval(self, role: str) -> Path:
        return self.root / eval_name(role)

    def eval_manifests(self) -> list[Path]:
        """Every eval's manifest in the directory (`eval-*.manifest.json`), by name."""
        return sorted(self.root.glob(f"{EVAL_PREFIX}*.{MANIFEST}"))

    def locate(self, given: str | Path | None, default: str, recorded_root: str | Path | None = None) -> Path | None:
        """An existing path for a file a summary or report names, or None.

        Recorded paths are relative to the cwd of the run that wrote them (`runs/demo/kept.jsonl`): they are
        tried inside this directory first (under the recorded run dir, then by file name), so a moved or
        copied run dir reads its own files, then as written, then the default name here.
        """
        candidates = []
        if given:
            path, recorded = Path(given), Path(recorded_root or self.root)
            if not path.is_absolute() and path.is_relative_to(recorded):
                candidates.append(self.root / path.relative_to(recorded))
            candidates += [self.root / path.name, path]
        candidates.append(self.root / default)
        return next((p for p in candidates if p.exists()), None)
