"""What each stage's `run()` hands back: typed results instead of dicts read by key.

`to_json()` is the JSON written to disk (the filter report, the eval manifest's accuracy part), the same keys
as before these types existed, so files of older runs and of newer ones read alike (summary.py and the report
read files, not these objects).
Limits: `result["key"]` still works (the old dicts' way) for callers not yet moved to attributes;
unknown keys are kept (`extra="allow"`) so a stage that adds a count does not break an older reader;
the summary of `seqdistill run` (summary.json, built from disk) is still a dict.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StageResult(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The result as written to disk and shown in the CLI's table (field order = today's key order)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    # Read-by-key access, kept for callers written against the old dicts (tests, branches in flight); code in
    # seqdistill/ reads attributes. Drop these two once no caller indexes a result.
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)


class GenerateResult(StageResult):
    """generate's counts for this invocation (also the body of the generate manifest)."""

    output: str
    prompts: int
    requested: int
    already_done: int
    generated: int = 0
    truncated: int = 0
    failed: int = 0
    interrupted: bool = False
    stopped_by: str | None = Field(default=None, description="the signal that stopped it (SIGINT, SIGTERM, ...)")
    budget_reached: str | None = Field(default=None, description="max_requests, max_output_tokens or max_cost")


class FunnelRow(StageResult):
    """One rule of the filter funnel: samples in, dropped, kept, and the first few drop reasons."""

    rule: str
    in_: int = Field(alias="in")
    dropped: int
    kept: int
    examples: list[dict[str, Any]] = Field(default_factory=list)


class FilterResult(StageResult):
    """filter's report (`<kept stem>.report.json`): where the outputs went, the funnel, the checks' counts."""

    input: str | None
    output: str
    rejected: str
    report: str
    total: int
    kept: int
    funnel: list[FunnelRow]
    answer_check: dict[str, Any]
    decontamination: dict[str, Any]
    config: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None


class EvalResult(StageResult):
    """eval's accuracy on the prompts (written into the eval manifest)."""

    model: str | None
    prompt: str
    prompts: int
    samples: int
    correct: int
    wrong: int
    unverifiable: int
    accuracy: float | None
    accuracy_ci: list[float] | None
    ci_method: str | None
    majority_accuracy: float | None
    per_prompt: dict[str, list[int]]
    output: str
    check: str
    model_identity: str
    weights: str | None

    @property
    def interrupted(self) -> bool:
        """A finished eval; an interrupted one returns generate's `GenerateResult` (interrupted=True) instead."""
        return False


class TrainResult(StageResult):
    """train's report (`<output>/training_report.json`): the fields every objective writes (the report and the
    CLI read them); SFT adds its pre-flight and lengths, on-policy its rounds (kept as extra keys)."""

    model: str | None
    output: str
    objective: str | None = None  # written by on-policy only (SFT reports predate the field)
    examples: int
    epochs: int | None
    steps: int
    train_loss: float | None
    first_loss: float | None
    last_loss: float | None
    loss_history: list[dict[str, Any]]
    eval_loss: float | None
    resumed_from: str | None
    steps_run: int
    lora: bool
    kd: dict[str, Any] | None
    packing: bool
    tokens: int
    max_length: int | None = None
    longest_example: int | None = None
    truncated_examples: int | None = None
    preflight: dict[str, Any] | None = None
    seconds: float
    tokens_per_s: float
    config: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
