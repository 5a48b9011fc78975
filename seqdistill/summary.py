"""A run's summary built from what is on disk: the manifests and reports each stage wrote beside its output.

`seqdistill run` writes it to summary.json when it ends, and `seqdistill report` builds it again, so stages
run by hand into one directory and a pipeline run are summarized alike, and a summary describes the whole
output (how many samples exist), not only the last invocation (`generated`: what the last generate run
added; `run` adds `generated_this_run` and, per stage, what it reused or redid and why: `invocation`).

Evals are found by their manifests (`eval-*.manifest.json`) and given a role: the one recorded by `run`,
else from the model: the trained student (its current weights) is `student_after`, the base student
`student_before`, the reference baseline `student_reference`, a teacher-prompted eval or the teacher's model
`teacher`; any other is listed under its file name. Of several evals of one role (a student retrained at the
same path), the one of the current weights wins.

Not covered: outputs outside the run dir, unless a PipelineConfig (or summary.json) names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqdistill import rundir
from seqdistill.io import read_json_object
from seqdistill.models import model_identity
from seqdistill.rundir import RunDir
from seqdistill.stats import compare

# (a, b) eval pairs whose difference a - b the summary reports: what training did, and against what
COMPARISONS = (
    ("student_after", "student_before"),
    ("student_after", "teacher"),
    ("student_after", "student_reference"),
)


def from_disk(run_dir: str | Path, paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The summary of the run dir: generate, filter, train, train_reference, eval (by role), comparisons.

    `paths` may name the outputs where they are not the default names (`samples`, `kept`, `student`).
    A part with nothing on disk is left out.
    """
    rd = RunDir(run_dir)
    paths = paths or {}
    samples = Path(paths.get("samples") or rd.samples)
    kept = Path(paths.get("kept") or rd.kept)
    student = Path(paths.get("student") or rd.student)
    summary: dict[str, Any] = {"run_dir": str(run_dir)}
    if (manifest := read_json_object(rundir.manifest_path(samples))) is not None:
        summary["generate"] = {**manifest, "samples": count_records(samples)}
    if (report := read_json_object(rundir.filter_report_path(kept))) is not None:
        summary["filter"] = report
    if (train := read_json_object(rundir.training_report_path(student))) is not None:
        summary["train"] = train
    if (reference := read_json_object(rundir.training_report_path(rd.student_reference))) is not None:
        summary["train_reference"] = reference
    evals = eval_roles(rd, summary.get("train"), student, (summary.get("generate") or {}).get("teacher"))
    if evals:
        summary["eval"] = evals
        summary["comparisons"] = comparisons(evals)
    return summary


def count_records(path: Path) -> int | None:
    """How many records (non-blank lines) a JSONL output holds; None when it is missing."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def eval_roles(
    rd: RunDir, train: dict[str, Any] | None, student: Path, teacher: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Each eval manifest in the run dir under its role (see the module doc)."""
    current = model_identity(str(student)) if student.is_dir() else None
    base = (train or {}).get("model")
    found: dict[str, list[dict[str, Any]]] = {}
    for path in rd.eval_manifests():
        manifest = read_json_object(path)
        if not manifest or manifest.get("stage") != "eval" or manifest.get("accuracy") is None:
            continue  # generate's part of an eval that never got scored (interrupted)
        role = manifest.get("role") or _infer_role(manifest, rd, student, base, teacher)
        found.setdefault(role or path.name.removesuffix(f".{rundir.MANIFEST}"), []).append(manifest)
    evals = {}
    for role, manifests in found.items():
        mine = [m for m in manifests if current and m.get("model_identity") == current]
        evals[role] = (mine or sorted(manifests, key=lambda m: str(m.get("finished_at"))))[-1]
    return evals


def _infer_role(
    manifest: dict[str, Any], rd: RunDir, student: Path, base: str | None, teacher: dict[str, Any] | None
) -> str | None:
    model = str(manifest.get("model") or "")
    if _same_path(model, student):
        return "student_after"
    if _same_path(model, rd.student_reference):
        return "student_reference"
    if base and (model == base or _same_path(model, Path(base))):
        return "student_before"
    if manifest.get("prompt") == "teacher" or (teacher and model == teacher.get("model")):
        return "teacher"
    return None


def _same_path(a: str, b: Path) -> bool:
    try:
        return Path(a).is_dir() and b.is_dir() and Path(a).resolve() == b.resolve()
    except OSError:
        return False


def comparisons(evals: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired comparisons (stats.compare) for each pair in COMPARISONS whose two evals both finished."""
    found = []
    for a, b in COMPARISONS:
        ra, rb = evals.get(a) or {}, evals.get(b) or {}
        if ra.get("per_prompt") is not None and rb.get("per_prompt") is not None:
            found.append(compare(ra["per_prompt"], rb["per_prompt"], names=(a, b)).to_dict())
    return found
