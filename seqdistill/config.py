"""Pydantic configs, one per stage, plus the pipeline recipe that chains them.

Precedence: YAML file < CLI flags < `--set key=value` overrides. Unknown keys are errors naming the key.
A stage command accepts either a file holding that stage's keys or a whole pipeline recipe (it then
takes the stage's section, with paths derived from `run_dir` as `seqdistill run` would).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seqdistill.checks.answers.registry import NONE, check_names_text, get_spec
from seqdistill.errors import ConfigError


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_check(name: str) -> str:
    """`check` must name a registry entry or "none" (a ConfigError lists them)."""
    if name != NONE:
        get_spec(name)
    return name


class PromptsConfig(_Config):
    source: str | None = Field(None, description="JSONL/Parquet file, saved `datasets` dir, or hub dataset name.")
    split: str = Field("train", description="Split to read from a dataset dir or hub dataset.")
    subset: str | None = Field(None, description="Hub dataset config name (e.g. 'main' for openai/gsm8k).")
    question_field: str = Field("question", description="Field with the question text.")
    answer_field: str = Field("answer", description="Field with the reference answer (optional in the data).")
    answer_pattern: str | None = Field(
        r"####\s*(.+?)\s*$", description="Regex whose first group extracts the reference (GSM8K '#### 42')."
    )
    id_field: str = Field("id", description="Field with a prompt id; a content hash when absent.")
    messages_field: str = Field("messages", description="Field with ready chat messages (used when no question).")
    tools_field: str = Field("tools", description="Field with a prompt's own tool definitions (OpenAI style).")
    tools: str | list[dict[str, Any]] | None = Field(
        None,
        description="Tool definitions (OpenAI style) for every prompt without its own: a list, or a JSON file "
        "holding one; sent to the teacher, stored on the records.",
    )
    system_prompt: str | None = Field(None, description="Student's system prompt.")
    template: str | None = Field(None, description="Student's user template: a .jinja path or inline Jinja.")
    teacher_system_prompt: str | None = Field(None, description="Teacher's system prompt (default: the student's).")
    teacher_template: str | None = Field(None, description="Teacher's user template (default: the student's).")
    teacher_examples: str | None = Field(
        None,
        description="JSONL of worked examples shown to the teacher only, as earlier turns: one object per line "
        'with the question field and `completion`, e.g. {"question": "What is 3 + 5?", "completion": "3 + 5 = 8. '
        'The answer is \\boxed{8}."} (docs/generate.md).',
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts.")


Shape = Literal["auto", "seqdistill", "prompt_completion", "messages", "sharegpt", "columns"]


class FieldMap(_Config):
    """Which columns of an existing dataset hold what (docs/datasets.md); unset keys use the shape's own names."""

    prompt: str | None = Field(
        None, description="Column with the prompt: a string (one user turn) or a list of messages."
    )
    completion: str | None = Field(
        None,
        description="Column with the completion: a string, a list of messages, or a list of strings "
        "(one sample per generation).",
    )
    reference: str | None = Field(None, description="Column with the reference answer (any shape).")
    reference_pattern: str | None = Field(
        None, description="Regex whose first group extracts the reference from that column (GSM8K: '####\\s*(.+)')."
    )
    system: str | None = Field(None, description="Column with a system prompt put before the prompt (any shape).")
    prompt_id: str | None = Field(
        None, description="Column with the prompt id (default: the row's prompt_id, else a hash of the prompt)."
    )
    reasoning: str | None = Field(
        None, description="Column with the completion's reasoning trace (a string, or a list beside the generations)."
    )
    finish_reason: str | None = Field(
        None, description="Column with the finish reason (a string, or a list beside the generations)."
    )
    per_generation: list[str] = Field(
        default_factory=list,
        description="Columns holding one value per generation (e.g. correctness_math_verify): each sample keeps "
        "its own value in meta.source.",
    )
    messages: str = Field("messages", description="Column with TRL `messages` (shape messages).")
    conversations: str = Field("conversations", description="Column with ShareGPT turns (shape sharegpt).")

    @field_validator("reference_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {e}") from None
        return pattern


class InputFormatConfig(_Config):
    """How a stage reads samples it did not write: the dataset's split, its shape, and its columns."""

    shape: Shape = Field(
        "auto",
        description="auto (detected from the first row) | seqdistill | prompt_completion | messages | sharegpt | "
        "columns (set by fields.prompt / fields.completion).",
    )
    split: str = Field("train", description="Split to read from a dataset dir or hub dataset.")
    subset: str | None = Field(None, description="Hub dataset config name.")
    fields: FieldMap = Field(default_factory=FieldMap)

    @model_validator(mode="after")
    def _columns_need_fields(self) -> InputFormatConfig:
        mapped = self.fields.prompt is not None or self.fields.completion is not None
        if self.shape == "columns" and not (self.fields.prompt and self.fields.completion):
            raise ValueError("shape columns needs fields.prompt and fields.completion (the columns that hold them)")
        if mapped and self.shape not in ("auto", "columns"):
            raise ValueError(f"fields.prompt / fields.completion map columns: they do not go with shape {self.shape}")
        return self


class SamplingConfig(_Config):
    temperature: float = Field(0.7, ge=0, description="0 means greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens per sample; longer ones are 'length'.")
    seed: int | None = Field(None, description="Sampling seed (some servers reject seeds: leave unset there).")
    stop: list[str] | None = Field(None, description="Stop strings.")


class GenerateConfig(_Config):
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    output: str = Field("samples.jsonl", description="Samples file; appended to, and resumed from.")
    backend: str = Field(
        "transformers", description="openai | transformers | vllm | auto (vllm with a GPU and vllm installed)."
    )
    model: str | None = Field(None, description="Teacher: served model name, HF dir, or bundled:smollm2.")
    base_url: str | list[str] = Field(
        "http://127.0.0.1:8000/v1",
        description="OpenAI-compatible server URL, or a list of servers to spread requests over (openai backend).",
    )
    http_client: Literal["aiohttp", "openai", "openai-httpx"] = Field(
        "aiohttp",
        description="aiohttp: a lean direct client (fastest); openai / openai-httpx: the official SDK.",
    )
    api_key_env: str | None = Field(
        None, description="Env var holding the API key (never written anywhere); unset for local servers."
    )
    n: int = Field(1, ge=1, description="Samples per prompt.")
    concurrency: int = Field(
        256,
        ge=1,
        description="Requests in flight at once (openai backend). 256 fills a GPU vLLM server's default batch "
        "(max_num_seqs: 256, 1024 on H100/H200); a 429 halves it (adaptive_concurrency). docs/generate.md.",
    )
    timeout: float = Field(600.0, gt=0, description="Seconds per request before it counts as failed.")
    max_retries: int = Field(4, ge=0, description="Retries of a request on 429/5xx/timeouts/dropped connections.")
    backoff_base: float = Field(1.0, ge=0, description="First retry waits up to this many seconds (then doubles).")
    backoff_max: float = Field(60.0, ge=0, description="Longest wait between two attempts, in seconds.")
    adaptive_concurrency: bool = Field(True, description="Halve concurrency on 429s, climb back on successes (AIMD).")
    requests_per_minute: float | None = Field(None, gt=0, description="Client-side request rate limit.")
    tokens_per_minute: float | None = Field(
        None, gt=0, description="Client-side token rate limit (prompt estimate + max_tokens × n per request)."
    )
    server_cooldown: float = Field(30.0, ge=0, description="Seconds a failing server is left out before a retry.")
    logprobs: int | None = Field(
        None, ge=0, le=20, description="Capture the teacher's top-k token logprobs (k ≤ 20) into meta.logprobs."
    )
    split_think: bool = Field(False, description="Move inline <think>…</think> into reasoning_content.")
    shard: str | None = Field(None, description="'I/N': process a deterministic 1/N of the prompts (I from 0).")
    max_requests: int | None = Field(None, ge=1, description="Budget: send at most this many requests this run.")
    max_output_tokens: int | None = Field(None, ge=1, description="Budget: stop after this many output tokens.")
    max_cost: float | None = Field(
        None, gt=0, description="Budget: stop when this run's cost reaches this (needs prices)."
    )
    price_input_per_m: float = Field(0.0, ge=0, description="Price per million prompt tokens (for cost and max_cost).")
    price_output_per_m: float = Field(
        0.0, ge=0, description="Price per million output tokens (for cost and max_cost)."
    )
    pilot_prompts: int = Field(5, ge=1, description="--dry-run: how many prompts the pilot sends.")
    allow_mixed_output: bool = Field(
        False, description="Let one output hold samples of different teachers or sampling settings."
    )
    batch_size: int = Field(16, ge=1, description="Samples per forward batch (transformers backend).")
    dtype: str = Field("float32", description="Weights dtype for in-process backends.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM in-process tensor parallelism.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra vllm.LLM arguments (e.g. max_model_len, gpu_memory_utilization)."
    )
    shutdown_timeout: float = Field(30.0, ge=0, description="After a first Ctrl-C, seconds to wait for in-flight.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra request fields (e.g. top_k).")
    mode: Literal["live", "batch", "batch-file"] = Field(
        "live",
        description="openai backend: live requests; batch: the provider's batch API (files + batches: about half "
        "price, answers within the completion window); batch-file: only write batch input files (for "
        "`vllm run-batch` or a later upload), read back with --from-batch-output. docs/batch.md.",
    )
    batch_max_requests: int = Field(50_000, ge=1, description="Batch: requests per input file (OpenAI: 50,000).")
    batch_max_bytes: int = Field(200_000_000, ge=1, description="Batch: bytes per input file (OpenAI: 200 MB).")
    batch_completion_window: str = Field("24h", description="Batch: the completion_window of each batch.")
    batch_price_factor: float = Field(
        0.5, gt=0, description="Batch modes: cost is the price_* keys times this (OpenAI's batch price: 0.5)."
    )
    batch_poll_interval: float = Field(
        10.0, gt=0, description="Batch: seconds before the first status poll; ×1.5 while nothing changes."
    )
    batch_poll_max: float = Field(300.0, gt=0, description="Batch: longest wait between two status polls (s).")
    batch_wait: bool = Field(
        True, description="Batch: wait for the batches and write their answers; false: submit, then exit."
    )
    response_format: str | dict[str, Any] | None = Field(
        None,
        description="Structured output: a JSON Schema file, or an OpenAI response_format mapping "
        "({type: json_schema, json_schema: {name, schema}}), that constrains decoding (openai, vllm backends).",
    )
    # an empty answer (no content, no reasoning) is a failed request, asked again (backends/validate.py)
    keep_empty_answers: ClassVar[bool] = False
    stage: ClassVar[str] = "generate"  # the progress bar's label: eval generates through this stage too

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: str | None) -> str | None:
        if value is None:
            return value
        i, sep, n = value.partition("/")
        if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
            raise ValueError(f"shard must be 'I/N' with 0 <= I < N, e.g. 0/4 (got {value!r})")
        return value

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | list[str]) -> str | list[str]:
        # never echo the URL: the message would carry the password into logs and terminals
        for url in [value] if isinstance(value, str) else value:
            if "@" in urlsplit(url).netloc:
                raise ValueError(
                    "credentials in the URL (user:password@host) are not supported: they would end up in logs and "
                    "manifests; remove them and put the key in an environment variable named by api_key_env"
                )
        return value

    @field_validator("response_format")
    @classmethod
    def _check_response_format(cls, value: str | dict[str, Any] | None) -> dict[str, Any] | None:
        from seqdistill.checks.answers.json import response_format

        return None if value is None else response_format(value)

    @model_validator(mode="after")
    def _base_url_means_openai(self) -> GenerateConfig:
        # the one backend rule (docs/generate.md): a server URL given without a backend names the openai backend
        if "base_url" in self.model_fields_set and "backend" not in self.model_fields_set:
            self.backend = "openai"
        return self

    @model_validator(mode="after")
    def _check_budget(self) -> GenerateConfig:
        if self.max_cost is not None and not (self.price_input_per_m or self.price_output_per_m):
            raise ValueError("max_cost needs prices: set price_input_per_m and price_output_per_m")
        return self

    @model_validator(mode="after")
    def _check_mode(self) -> GenerateConfig:
        if self.mode != "live" and "backend" not in self.model_fields_set:
            self.backend = "openai"  # the batch modes are the openai backend's
        elif self.mode != "live" and self.backend != "openai":
            raise ValueError(
                f"mode {self.mode} is a way of the openai backend: set backend=openai, not {self.backend}"
            )
        return self

    @property
    def base_urls(self) -> list[str]:
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        if not urls:
            raise ConfigError("base_url: give at least one server URL")
        return urls


class FilterConfig(_Config):
    input: str | None = Field(
        None, description="Samples to filter: JSONL, Parquet, a saved dataset dir or a hub name, in any shape."
    )
    input_format: InputFormatConfig = Field(default_factory=InputFormatConfig)
    output: str | None = Field(None, description="Kept samples (default: <input stem>.kept.jsonl).")
    check: str = Field("math", description=f"Answer check: {check_names_text()} (see docs/checks.md).")
    check_pattern: str | None = Field(None, description="check regex: the pattern whose first group is the answer.")
    json_schema: str | dict[str, Any] | None = Field(
        None, description="check json: the JSON Schema (a file, or inline) the answer must validate against."
    )
    check_field: str | None = Field(
        None, description="check json: the answer's field compared with the reference, e.g. $.answer ($: the whole)."
    )
    check_timeout: float = Field(5.0, gt=0, description="Seconds one answer check may take (then: unverifiable).")
    unsafe_code_check: bool = Field(
        False,
        description="Run the code check without a sandbox when bubblewrap is missing (the teacher's code then "
        "runs as you, with your files; see docs/sandbox.md).",
    )
    workers: int = Field(0, ge=0, description="Processes for answer checks (0: in this process).")
    vote: bool = Field(
        False, description="Prompts without a reference: the teacher's majority answer becomes the reference."
    )
    min_agreement: float = Field(0.5, gt=0, le=1, description="Voting: share of samples the majority needs.")
    keep_unverifiable: bool = Field(False, description="Keep samples whose answer cannot be verified.")
    drop_truncated: bool = Field(True, description="Drop samples with finish_reason 'length'.")
    dedup: bool = Field(True, description="Drop exact duplicate (prompt, normalized completion) pairs.")
    min_tokens: int | None = Field(None, ge=0, description="Drop completions shorter than this (tokens).")
    max_tokens: int | None = Field(None, ge=1, description="Drop completions longer than this (tokens).")
    tokenizer: str | None = Field(
        None, description="Model whose tokenizer counts tokens for min/max_tokens (the student); default: words."
    )
    require_think: bool = Field(False, description="Drop completions without a closed <think> block.")
    max_repetition: float | None = Field(
        None, gt=0, le=1, description="Drop completions whose repeated word 4-gram ratio exceeds this."
    )
    drop_refusals: bool = Field(True, description="Drop completions with a refusal phrase.")
    refusal_phrases: list[str] | None = Field(None, description="Refusal phrases (default: a built-in list).")
    decontaminate: list[str] = Field(
        default_factory=list, description="Eval sets (files, dataset dirs or hub names) whose prompts must not leak."
    )
    decontam_ngram: int = Field(13, ge=1, description="Word n-gram length for decontamination.")
    near_dup_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Drop completions this similar (MinHash Jaccard) to a kept one of the same prompt.",
    )
    near_dup_prompt_threshold: float | None = Field(
        None, gt=0, le=1, description="Drop prompts this similar to an earlier prompt (all their samples)."
    )
    max_per_prompt: int | None = Field(None, ge=1, description="Keep at most K samples per prompt.")
    selection: Literal["first", "shortest", "random"] = Field(
        "first", description="Which K samples a prompt keeps: first in the file, shortest, or random (seeded)."
    )
    seed: int = Field(0, description="Seed of the random selection.")
    min_pass_rate: float | None = Field(
        None, ge=0, le=1, description="Keep only prompts the teacher solves at least this often (correct / samples)."
    )
    max_pass_rate: float | None = Field(
        None, ge=0, le=1, description="Keep only prompts the teacher solves at most this often (0.9: drop easy ones)."
    )

    _check_known = field_validator("check")(_known_check)

    @model_validator(mode="after")
    def _check_vote_and_band(self) -> FilterConfig:
        if self.vote and self.check != NONE and not get_spec(self.check).votable:
            raise ConfigError(
                f"vote: the {self.check} check has no answers to vote on (it grades each sample by tests): "
                "give the prompts references, or set vote: false"
            )
        if self.min_pass_rate is None and self.max_pass_rate is None:
            return self
        if self.check == NONE:
            raise ConfigError("min_pass_rate / max_pass_rate need an answer check (pass rates count correct answers)")
        if (self.min_pass_rate or 0) > (1 if self.max_pass_rate is None else self.max_pass_rate):
            raise ConfigError(f"min_pass_rate {self.min_pass_rate} is above max_pass_rate {self.max_pass_rate}")
        return self

    def output_path(self) -> Path:
        if self.output:
            return Path(self.output)
        src = Path(self.input or "samples.jsonl")
        hub = not src.exists() and not src.suffix and "/" in str(self.input) and not str(self.input).startswith(".")
        if hub and not src.is_absolute():  # a hub dataset (owner/name): written here, not in a folder named `owner`
            return Path(src.name + ".kept.jsonl")
        return src.with_name(src.stem + ".kept.jsonl")


class OnPolicyConfig(_Config):
    """`train` with `objective: onpolicy`: rounds of student sampling, teacher scoring and reverse-KL steps.

    The optimizer keys of `train` apply (`learning_rate`, `batch_size` rollouts per micro-batch,
    `gradient_accumulation_steps`, `lr_scheduler_type`, `warmup_ratio`, `seed`, `dtype`, `bf16`).
    """

    teacher: str | None = Field(
        None,
        description="Teacher scoring the student's tokens (HF dir, hub id, bundled:smollm2); "
        "default: the teacher model named by the input samples.",
    )
    teacher_backend: Literal["transformers", "openai", "vllm"] = Field(
        "transformers",
        description="How the teacher scores: transformers (in-process), openai (a server with prompt logprobs, "
        "e.g. vllm serve), vllm (in-process); the last two through `seqdistill score`'s backends.",
    )
    teacher_base_url: str | list[str] | None = Field(
        None, description="teacher_backend openai: the server(s), e.g. http://127.0.0.1:8000/v1."
    )
    teacher_tokenizer: str | None = Field(
        None,
        description="The teacher's tokenizer (a model dir or bundled name) when `teacher` is a served model's name "
        "that does not load here (vllm serve --served-model-name); default: teacher.",
    )
    teacher_api_key_env: str | None = Field(
        None, description="teacher_backend openai: env var holding the server's API key (never written anywhere)."
    )
    teacher_dtype: str = Field("float32", description="Teacher weights dtype (in-process teachers).")
    teacher_batch_size: int = Field(16, ge=1, description="Rollouts per teacher forward pass.")
    sampler: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="Student sampling engine: transformers (in-process, current weights) or vllm (in-process on a "
        "GPU, the current weights loaded each round; untested without a GPU).",
    )
    sample_batch_size: int = Field(32, ge=1, description="Rollouts per generation batch (transformers sampler).")
    rounds: int = Field(4, ge=1, description="Rounds of sample → score → train.")
    prompts_per_round: int = Field(32, ge=1, description="Prompts the student answers each round (cycling the pool).")
    n: int = Field(2, ge=1, description="Student samples per prompt each round.")
    temperature: float = Field(
        1.0, gt=0, description="Student sampling temperature (1: samples from the policy the loss assumes)."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Student nucleus sampling (1: off).")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per student sample; longer ones are cut.")
    steps_per_round: int | None = Field(
        None, ge=1, description="Optimizer steps per round (cycling the round's rollouts); default: one pass."
    )
    loss: Literal["reverse_kl", "jsd"] = Field(
        "reverse_kl",
        description="reverse_kl: sampled-token estimator, needs the teacher's logprob of each student token; "
        "jsd: generalized JSD on the teacher's top-k (+ the rest as one bucket), weighted by beta.",
    )
    beta: float = Field(
        1.0,
        ge=0,
        le=1,
        description="jsd: 0 = forward KL(teacher‖student), 1 = reverse KL(student‖teacher) (TRL's GKD).",
    )
    top_k: int = Field(20, ge=1, description="jsd: how many of the teacher's top tokens per position.")
    sft_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of optimizer steps that are cross-entropy on the input's teacher samples "
        "(GKD's lambda is 1 - sft_share).",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    prompts: PromptsConfig | None = Field(
        None, description="Prompt source (student and teacher renderings); default: the input samples' prompts."
    )

    @model_validator(mode="after")
    def _base_url_means_openai(self) -> OnPolicyConfig:
        # the one backend rule, as for generate: a teacher server URL without a teacher backend means openai
        if "teacher_base_url" in self.model_fields_set and "teacher_backend" not in self.model_fields_set:
            self.teacher_backend = "openai"
        return self


class TrainConfig(_Config):
    input: str | None = Field(
        None, description="Kept samples: JSONL, Parquet, a saved dataset dir or a hub name, in any shape."
    )
    input_format: InputFormatConfig = Field(default_factory=InputFormatConfig)
    model: str | None = Field(None, description="Student: HF model dir or bundled:smollm2.")
    output: str = Field("student", description="Directory for the trained model and its report.")
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int | None = Field(None, ge=8, description="Token limit; default: the longest example.")
    max_truncated_share: float = Field(
        0.01, ge=0, le=1, description="Pre-flight: refuse to train when a larger share of examples would be cut."
    )
    lr_scheduler_type: str = Field("linear")
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    bf16: bool = Field(False, description="bfloat16 mixed precision (set explicitly: TRL turns it on).")
    dtype: str = Field(
        "float32", description="Weights dtype when loading the student (bfloat16 on GPUs: half the memory)."
    )
    attn_implementation: str | None = Field(
        None, description="Attention kernel: sdpa, flash_attention_2 (pip install flash-attn), eager; default: sdpa."
    )
    liger_kernel: bool = Field(
        False, description="Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU; GPU, pip install liger-kernel)."
    )
    gradient_checkpointing: bool = Field(False)
    seed: int = Field(42)
    logging_steps: int | None = Field(
        None, ge=1, description="Log the loss every N optimizer steps; default: about 25 points over the run."
    )
    packing: bool = Field(False, description="Pack examples into full sequences (TRL best-fit decreasing).")
    padding_free: bool = Field(
        False,
        description="One row per batch, no padding (TRL; fastest with flash_attention_2; packing implies it).",
    )
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights; saved merged.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    qlora: bool = Field(
        False,
        description="LoRA on the student loaded in 4-bit NF4 (bitsandbytes: pip install 'seqdistill[qlora]'); "
        "saved merged into the full-precision weights.",
    )
    save_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N steps under <output>/checkpoints (a rerun resumes from the last)."
    )
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="Share of examples held out for eval loss.")
    reasoning: Literal["think", "drop"] = Field(
        "think", description="Render reasoning_content as <think>…</think> before the answer, or drop it."
    )
    train_on: Literal["completion", "all_assistant"] = Field(
        "completion",
        description="Assistant turns to learn: the completion's, or also the prompt's earlier ones (conversations).",
    )
    kd_alpha: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of Hinton's soft-target loss on the teacher's top-k logprobs (generate with logprobs=K); "
        "0: cross-entropy on the samples only.",
    )
    kd_temperature: float = Field(1.0, gt=0, description="Soft-target temperature T (the KD term is scaled by T²).")
    kd_teacher_tokenizer: str | None = Field(
        None,
        description="Teacher tokenizer checked against the student's before soft-target training; "
        "default: the samples' teacher model.",
    )
    objective: Literal["sft", "onpolicy"] = Field(
        "sft",
        description="sft: cross-entropy on the samples (plus soft targets with kd_alpha); onpolicy: the student "
        "samples, the teacher scores its tokens, the student lowers the per-token reverse KL (see onpolicy.*).",
    )
    onpolicy: OnPolicyConfig = Field(default_factory=OnPolicyConfig)

    @model_validator(mode="after")
    def _check_kd(self) -> TrainConfig:
        if self.qlora:
            self.lora = True  # QLoRA is LoRA on a quantized base
        if self.kd_alpha > 0 and (self.packing or self.padding_free):
            raise ValueError(
                "kd_alpha > 0 (soft targets) does not work with packing or padding_free yet: set them to false"
            )
        if self.objective == "onpolicy":
            unsupported = [k for k in _NOT_ONPOLICY if getattr(self, k) != TrainConfig.model_fields[k].default]
            if unsupported:
                raise ValueError(f"objective onpolicy does not support {', '.join(unsupported)} yet: unset them")
        return self


# train keys the on-policy loop does not use: refused rather than silently ignored
_NOT_ONPOLICY = ("lora", "qlora", "packing", "padding_free", "kd_alpha", "eval_fraction", "save_steps", "liger_kernel")


class EvalSamplingConfig(SamplingConfig):
    """Eval samples greedily by default, whichever sampling keys are overridden."""

    temperature: float = Field(0.0, ge=0, description="0 means greedy.")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per sample; longer ones are 'length'.")


class EvalConfig(GenerateConfig):
    output: str = Field("eval.jsonl", description="Per-sample eval results (resumable).")
    n: int = Field(1, ge=1, description="Samples per prompt; pass@1 is averaged over them.")
    check: str = Field("math", description="Answer check, as in filter.")
    check_pattern: str | None = Field(None, description="check regex: the pattern whose first group is the answer.")
    json_schema: str | dict[str, Any] | None = Field(
        None, description="check json: the JSON Schema (a file, or inline) the answer must validate against."
    )
    check_field: str | None = Field(
        None, description="check json: the answer's field compared with the reference, e.g. $.answer ($: the whole)."
    )
    check_timeout: float = Field(5.0, gt=0, description="Seconds one answer check may take (then: unverifiable).")
    workers: int = Field(0, ge=0, description="Processes for answer checks (0: in this process).")
    unsafe_code_check: bool = Field(
        False, description="check code: run teacher code without a sandbox where none is available."
    )
    allow_mixed_output: bool = Field(True, description="Eval files hold results of several models (scored by id).")
    prompt: Literal["student", "teacher"] = Field("student", description="Which prompt rendering to send.")
    sampling: EvalSamplingConfig = Field(default_factory=EvalSamplingConfig)
    # an empty answer is the model's answer (scored not correct), not a failed request (backends/validate.py)
    keep_empty_answers: ClassVar[bool] = True
    stage: ClassVar[str] = "eval"

    _check_known = field_validator("check")(_known_check)


class ScoreConfig(GenerateConfig):
    """`seqdistill score`: the teacher's logprob of every completion token of the input samples.

    How to reach and run the teacher (backend, model, base_url, concurrency, retries, batch_size, dtype,
    engine_args, ...) are generate's keys; what only generation uses is refused when set.
    """

    input: str | None = Field(
        None, description="Samples whose completions the teacher scores (any shape filter reads)."
    )
    input_format: InputFormatConfig = Field(default_factory=InputFormatConfig)
    output: str = Field("scored.jsonl", description="Scored samples file; appended to, and resumed from.")
    logprobs: int = Field(
        5,
        ge=0,
        description="Top-k per position recorded beside each token's own logprob (0: its own only); "
        "a server caps it (vLLM: --max-logprobs, 20 by default).",
    )
    teacher_tokenizer: str | None = Field(
        None,
        description="The teacher's tokenizer (local dir, hub id, bundled name): it turns prompt and completion "
        "into the token ids sent; default: the model.",
    )
    logprobs_api: Literal["auto", "prompt_logprobs", "echo"] = Field(
        "auto",
        description="openai backend: vLLM's prompt_logprobs, or echo with logprobs; auto tries them in that order.",
    )
    reasoning: Literal["think", "drop"] = Field(
        "think", description="Score reasoning_content as <think>…</think> before the answer (as train renders it)."
    )
    batch_size: int = Field(8, ge=1, description="Sequences per forward pass (transformers), 8× that per vLLM call.")

    @model_validator(mode="after")
    def _refuse_generation_keys(self) -> ScoreConfig:
        unused = {"n", "sampling", "split_think", "max_output_tokens", "max_cost", "pilot_prompts", "response_format"}
        unused |= {"mode"}  # batch modes are generate's
        unused &= self.model_fields_set
        unused |= {f"prompts.{k}" for k in ("source", "teacher_template") if k in self.prompts.model_fields_set}
        if unused:
            raise ValueError(
                f"score does not use {', '.join(sorted(unused))}: it scores the input's completions under the "
                "teacher's prompt (meta.teacher_prompt, or prompts.teacher_system_prompt / prompts.teacher_examples)"
            )
        return self


class ExportConfig(_Config):
    """`seqdistill export`: kept samples as a folder that `datasets.load_dataset(DIR)` loads (docs/export.md)."""

    input: str | None = Field(None, description="Kept samples to export (any shape filter reads).")
    input_format: InputFormatConfig = Field(default_factory=InputFormatConfig)
    to: str | None = Field(None, description="Folder to write (refused when it exists and is not empty).")
    format: Literal["parquet", "jsonl", "messages", "sharegpt"] = Field(
        "parquet",
        description="parquet / jsonl: the records as they are; messages: TRL `messages`; sharegpt: "
        "`conversations` of from/value turns.",
    )
    test_size: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Share of the prompts held out as a test split (all samples of a prompt go together).",
    )
    seed: int = Field(0, description="Seed of the train/test split.")
    overwrite: bool = Field(False, description="Replace the folder when it exists (written by an earlier export).")
    push_to_hub: str | None = Field(None, description="Also upload the folder to this Hub dataset repo (owner/name).")
    private: bool = Field(False, description="Create the Hub repo private.")


class RecipeConfig(_Config):
    """One way to train the student in a comparison run (`recipes:` of a pipeline; docs/onpolicy.md).

    A recipe is an SFT start (`sft`) optionally followed by on-policy distillation (`onpolicy`). Students that
    recipes share are trained once: `sft: kept` is the pipeline's own student, `sft: reference` its reference
    baseline.
    """

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
        description="Short name (lowercase, digits, - and _): run-dir parts student-<name>, eval-recipe-<name>.jsonl.",
    )
    label: str | None = Field(None, description="Row label in the comparison table (default: the name).")
    sft: Literal["none", "kept", "reference", "vote"] = Field(
        "kept",
        description="What the student is first fine-tuned on: none (the untrained student), kept (the filtered "
        "teacher samples), reference (the prompts' bare reference answers), vote (the teacher samples that agree "
        "with the teacher's majority answer; no reference answer is used).",
    )
    onpolicy: bool = Field(False, description="Then on-policy distillation (train.onpolicy.* settings).")
    teacher: Literal["teacher", "self"] = Field(
        "teacher",
        description="onpolicy: who scores the student's tokens: the teacher (train.onpolicy.teacher, default "
        "generate.model, with the teacher's prompt), or self: the recipe's SFT'd student given the teacher's prompt.",
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="onpolicy: train keys that differ for this recipe (e.g. {learning_rate: 1e-5, onpolicy: "
        "{rounds: 2}}), on top of the train section.",
    )

    @model_validator(mode="after")
    def _check_recipe(self) -> RecipeConfig:
        if self.teacher == "self" and self.sft == "none":
            raise ValueError(f"recipe {self.name}: teacher self needs an SFT'd student (sft: kept, reference or vote)")
        if not self.onpolicy and (self.train or self.teacher != "teacher"):
            raise ValueError(f"recipe {self.name}: teacher and train apply to on-policy recipes: set onpolicy: true")
        if self.sft == "none" and not self.onpolicy:
            raise ValueError(f"recipe {self.name}: sft none without onpolicy is the untrained student (always shown)")
        return self


class PipelineConfig(_Config):
    """A recipe: generate -> filter -> train, with held-out eval of teacher and student before/after."""

    run_dir: str = Field("runs/default", description="Where every stage writes.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig | None = Field(None, description="Held-out eval (prompts with references).")
    score: ScoreConfig | None = Field(
        None, description="Teacher scoring of the samples (`seqdistill score`; `seqdistill run` does not run it)."
    )
    export: ExportConfig | None = Field(
        None, description="Export of the kept samples (`seqdistill export`; `seqdistill run` does not run it)."
    )
    reference_baseline: bool = Field(
        False,
        description="Also train the student on the bare reference answers of the same prompts (same settings) "
        "and evaluate it: the control for distillation.",
    )
    recipes: list[RecipeConfig] = Field(
        default_factory=list,
        description="Also train and evaluate these recipes (SFT start, then optionally on-policy) and write one "
        "comparison table (recipes.json; docs/onpolicy.md).",
    )
    compare_to: str | None = Field(
        None, description="The recipe every other is compared with, prompt by prompt (default: the first)."
    )

    @model_validator(mode="after")
    def _check_recipes(self) -> PipelineConfig:
        names = [r.name for r in self.recipes]
        if dup := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"recipes: two recipes are named {dup!r}; names must be unique")
        if self.compare_to is not None and self.compare_to not in names:
            raise ValueError(f"compare_to {self.compare_to!r} names no recipe ({', '.join(names) or 'none given'})")
        return self

    def resolved(self) -> PipelineConfig:
        """Fill each stage's paths from run_dir so stage outputs feed the next stage."""
        d = Path(self.run_dir)
        cfg = self.model_copy(deep=True)
        explicit = self.generate.model_fields_set
        if "output" not in explicit:
            cfg.generate.output = str(d / "samples.jsonl")
        cfg.filter.input = cfg.filter.input or cfg.generate.output
        cfg.filter.output = cfg.filter.output or str(d / "kept.jsonl")
        cfg.train.input = cfg.train.input or cfg.filter.output
        if cfg.filter.check == "json" and cfg.filter.json_schema is None and cfg.generate.response_format:
            from seqdistill.checks.answers.json import schema_of  # the schema generate constrained to

            cfg.filter.json_schema = schema_of(cfg.generate.response_format)
        if cfg.export is not None:
            cfg.export.input = cfg.export.input or cfg.filter.output
        if "output" not in self.train.model_fields_set:
            cfg.train.output = str(d / "student")
        if cfg.eval is not None and "output" not in self.eval.model_fields_set:
            cfg.eval.output = str(d / "eval.jsonl")
        if cfg.score is not None:  # score the generated samples, with generate's teacher unless set
            explicit = self.score.model_fields_set
            cfg.score.input = cfg.score.input or cfg.generate.output
            if "output" not in explicit:
                cfg.score.output = str(d / "scored.jsonl")
            for key in ("backend", "model", "base_url", "api_key_env", "dtype"):
                if key not in explicit:
                    setattr(cfg.score, key, getattr(cfg.generate, key))
        return cfg


SECTIONS = ("generate", "filter", "train", "eval", "score", "export")
_STAGE_CLASSES: dict[str, type[_Config]] = {
    "generate": GenerateConfig, "filter": FilterConfig, "train": TrainConfig, "eval": EvalConfig, "score": ScoreConfig,
    "export": ExportConfig,
}  # fmt: skip


def parse_set(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> {"a.b": 1, "c": "x"}; values are YAML scalars (numbers, true, null, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set sampling.temperature=0.6")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path}: not valid UTF-8 (byte {e.start + 1}); save it as UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"config {path}: cannot read it ({os.strerror(e.errno) if e.errno else e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def _validate(cls: type[_Config], data: dict[str, Any], origin: str, sources: dict[str, str] | None = None) -> Any:
    """Validate `data` as `cls`; the first error names where the bad key or value came from and how to fix it.

    `sources` maps dotted keys to where their value was given (a flag, a `--set`, a file line); keys not in it
    are blamed on `origin`.
    """
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        parts = [str(p) for p in err["loc"]]
        loc = ".".join(parts)
        where = _source(sources or {}, parts, origin)
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{where}: unknown config key '{loc}'{_key_hint(cls, parts)}") from None
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {loc}: {message}" if loc else f"{where}: {message}") from None


def _source(sources: dict[str, str], parts: list[str], origin: str) -> str:
    """Where the value at `parts` came from: the longest dotted prefix that has a recorded source."""
    for end in range(len(parts), 0, -1):
        if (found := sources.get(".".join(parts[:end]))) is not None:
            return found
    return origin


def _fields_at(cls: type[BaseModel], parts: list[str]) -> dict[str, Any] | None:
    """The fields of the (nested) config model that holds the key at `parts`, or None past a non-model."""
    model: Any = cls
    for part in parts[:-1]:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = next((a for a in (field.annotation, *getattr(field.annotation, "__args__", ())) if _is_model(a)), None)
        if model is None:
            return None
    return model.model_fields


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _key_hint(cls: type[BaseModel], parts: list[str]) -> str:
    """' (did you mean ...?)' for a typo, or the stage a key belongs to; else where the keys are listed."""
    import difflib

    name, fields = parts[-1], _fields_at(cls, parts) or {}
    prefix = ".".join(parts[:-1] + [""])
    close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.7)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    owners = [stage for stage, other in _STAGE_CLASSES.items() if other is not cls and name in other.model_fields]
    stage = next((s for s, c in _STAGE_CLASSES.items() if c is cls), None)
    if owners and stage:
        return f" ('{name}' is a key of {' and '.join(owners)}, not of {stage}; see docs/config.md)"
    return " (see docs/config.md for the keys)"


def load_stage(
    section: str, path: str | None = None, flags: dict[str, Any] | None = None, sets: list[str] | None = None
) -> Any:
    """Build the config of one stage from a file (stage keys or a pipeline recipe), flags and --set overrides."""
    data = read_yaml(path)
    origin = f"config {path}" if path else "config"
    overrides = {k: v for k, v in (flags or {}).items() if v is not None}
    parsed = parse_set(sets or [])
    overrides.update(parsed)
    # a recipe may omit this stage's section (defaults) and run_dir: any section key marks it as a recipe
    is_recipe = "run_dir" in data or any(key in data for key in SECTIONS)
    prefix = f"{section}." if is_recipe else ""
    sources = {**yaml_lines(path), **_override_sources(flags or {}, sets or [], parsed, prefix)}
    if is_recipe:
        for key, value in overrides.items():
            _put(data, f"{section}.{key}", value)
        pipeline = _validate(PipelineConfig, data, origin, sources).resolved()
        stage = getattr(pipeline, section)
        if stage is None:
            raise ConfigError(f"{origin}: no '{section}' section")
        return stage
    for key, value in overrides.items():
        _put(data, key, value)
    return _validate(_STAGE_CLASSES[section], data, origin, sources)


def load_pipeline(path: str, sets: list[str] | None = None) -> PipelineConfig:
    data = read_yaml(path)
    parsed = parse_set(sets or [])
    for key, value in parsed.items():
        _put(data, key, value)
    sources = {**yaml_lines(path), **_override_sources({}, sets or [], parsed, "")}
    return _validate(PipelineConfig, data, f"config {path}", sources).resolved()


# CLI flags whose name is not the last part of their config key
_FLAG_NAMES = {"prompts.source": "--prompts", "input": "the INPUT argument"}


def _override_sources(flags: dict[str, Any], sets: list[str], parsed: dict[str, Any], prefix: str) -> dict[str, str]:
    """Dotted key -> the flag or `--set` that gave its value (a `--set` wins over a flag, as it does in the config)."""
    out = {
        prefix + key: _FLAG_NAMES.get(key, "--" + key.rsplit(".", 1)[-1].replace("_", "-"))
        for key, value in flags.items()
        if value is not None
    }
    for item in sets:
        key = item.partition("=")[0].strip()
        if key in parsed:
            out[prefix + key] = f"--set {key}"  # never the value: it may be a secret pasted in
    return out


def yaml_lines(path: str | None) -> dict[str, str]:
    """Dotted key -> 'config FILE line N' for every key of a YAML mapping file (for error messages)."""
    if path is None:
        return {}
    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            dotted = f"{prefix}{key.value}"
            out[dotted] = f"config {path} line {key.start_mark.line + 1}"
            walk(value, dotted + ".")

    walk(root, "")
    return out


def api_key(cfg: GenerateConfig) -> str:
    """The API key from the env var the config names; the key itself is never stored or logged."""
    if cfg.api_key_env is None:
        return os.environ.get("OPENAI_API_KEY") or "EMPTY"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cfg.api_key_env):
        # most likely the key itself pasted in: never echo it
        raise ConfigError("api_key_env must be the NAME of an environment variable holding the key, not the key")
    value = os.environ.get(cfg.api_key_env)
    if not value:
        raise ConfigError(
            f"environment variable {cfg.api_key_env} is not set (named by api_key_env): "
            f"export {cfg.api_key_env}=<your key>, or unset api_key_env for a local server"
        )
    return value


def reference_markdown() -> str:
    """The config keys as Markdown tables, from the fields' defaults and descriptions (docs/config.md).

    `python -m seqdistill.config` prints it; a test checks docs/config.md holds exactly this text.
    """
    sections = [
        ("pipeline (`seqdistill run`)", PipelineConfig, ""),
        ("generate", GenerateConfig, ""),
        ("generate / eval: `prompts.*`", PromptsConfig, "prompts."),
        ("generate / eval: `sampling.*`", SamplingConfig, "sampling."),
        ("filter", FilterConfig, ""),
        ("train", TrainConfig, ""),
        ("train: `onpolicy.*` (with `objective: onpolicy`)", OnPolicyConfig, "onpolicy."),
        ("filter / train / score / export: `input_format.*` (docs/datasets.md)", InputFormatConfig, "input_format."),
        ("`input_format.fields.*`: the columns that hold each part", FieldMap, "input_format.fields."),
        ("export (docs/export.md)", ExportConfig, ""),
        ("pipeline: each of `recipes` (docs/onpolicy.md)", RecipeConfig, "recipes[]."),
    ]
    lines: list[str] = []
    for title, cls, prefix in sections:
        lines += ["", f"**{title}**", "", "| key | default | meaning |", "|---|---|---|"]
        lines += [_row(prefix + name, field) for name, field in cls.model_fields.items() if not _is_section(field)]
    lines += [
        "",
        "**eval**: the generate keys, with its own `prompts` and `sampling` (greedy by default, "
        "`max_tokens` 256), `n` 1, `output` `eval.jsonl`, and:",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    keys = (
        "check", "check_pattern", "json_schema", "check_field", "check_timeout", "workers", "unsafe_code_check",
        "prompt", "allow_mixed_output",
    )  # fmt: skip
    lines += [_row(name, EvalConfig.model_fields[name]) for name in keys]
    own = [name for name in ScoreConfig.model_fields if name not in GenerateConfig.model_fields or name == "output"]
    lines += [
        "",
        "**score**: the generate keys that reach and run the teacher (`backend`, `model`, `base_url`, "
        "`concurrency`, retries, `batch_size`, `dtype`, ...; not `n`, `sampling` or budgets in tokens), and:",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        *[_row(name, ScoreConfig.model_fields[name]) for name in (*own, "logprobs")],
    ]
    return "\n".join(lines[1:]) + "\n"


def _is_section(field: Any) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def choices(annotation: Any) -> list[str]:
    """The values a `Literal` key takes (inside `X | None` too), for help texts and docs; [] for any other type.

    >>> choices(Literal["a", "b"] | None)
    ['a', 'b']
    """
    import typing

    if typing.get_origin(annotation) is Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return [v for arg in typing.get_args(annotation) for v in choices(arg)]


def _row(key: str, field: Any) -> str:
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    shown = "required" if field.is_required() else "—" if default is None else f"`{default}`"
    meaning = (field.description or "").replace("|", "/")
    if values := choices(field.annotation):  # every value of an enum key, from its type
        meaning = f"{meaning} One of: {', '.join(f'`{v}`' for v in values)}.".strip()
    return f"| `{key}` | {shown} | {meaning} |"


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference_markdown())
