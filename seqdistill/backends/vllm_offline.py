"""vLLM in-process (`vllm.LLM.chat`) for GPU machines; imported only when this backend is chosen.

vLLM's CUDA wheel pins its own torch/transformers, which clash with the training stack: install it in
its own environment with `pip install 'seqdistill[vllm]'`. It cannot run on our CPU-only CI, so this
backend is exercised only where a GPU is present.

Tools: a request's `tools` reach the chat template (`LLM.chat(..., tools=...)`, one call per set of
tools); a template that would not show them is refused in one line, and calls in the output are parsed
with the tokenizer's response template when it has one (vLLM's server parses them with
`--tool-call-parser`); otherwise they stay in the answer's text, and the run says so once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import vllm  # noqa: F401  (ImportError here becomes "needs pip install 'seqdistill[vllm]'")

from seqdistill.backends.base import Backend, Failure, Request, Result, split_think, wire_messages
from seqdistill.backends.chat_template import check_tool_rendering, parse_answer, render_prompt
from seqdistill.backends.validate import AnswerRules, check_result
from seqdistill.models import resolve_model
from seqdistill.records import Logprobs


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, cfg):
        super().__init__(cfg)
        # the float32 default suits CPU generation; on a GPU let vLLM pick unless dtype was set explicitly
        dtype = cfg.dtype if "dtype" in cfg.model_fields_set else "auto"
        self.llm = vllm.LLM(
            model=resolve_model(cfg.model),
            tensor_parallel_size=cfg.tensor_parallel_size,
            dtype=dtype,
            **{"seed": cfg.sampling.seed or 0, **cfg.engine_args},
        )

    def generate(self, requests: list[Request], stop: threading.Event) -> Iterator[Result | Failure]:
        s = self.cfg.sampling
        rules = AnswerRules.for_config(self.cfg)
        uses_tools = any(
            r.tools or any(m.get("tool_calls") or m["role"] == "tool" for m in r.messages) for r in requests
        )
        tokenizer = self.llm.get_tokenizer() if uses_tools else None
        parses = uses_tools and check_tool_rendering(tokenizer, requests, self.cfg.model or "", self.name)
        # vLLM batches internally; chunks keep results flowing to disk and let Ctrl-C stop between chunks.
        chunk = max(1, self.cfg.batch_size * 8)
        for start in range(0, len(requests), chunk):
            if stop.is_set():
                return
            part = requests[start : start + chunk]
            params = [
                vllm.SamplingParams(
                    n=req.n,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    max_tokens=s.max_tokens,
                    seed=s.seed,
                    stop=s.stop,
                    logprobs=self.cfg.logprobs,
                    structured_outputs=structured_outputs(self.cfg.response_format),
                )
                for req in part
            ]
            for req, out in zip(part, self._chat(part, params), strict=True):
                prompt = render_prompt(tokenizer, req) if parses and req.tools else None
                for completion, idx in zip(out.outputs, req.sample_indices, strict=False):
                    usage = {
                        "prompt_tokens": len(out.prompt_token_ids),
                        "completion_tokens": len(completion.token_ids),
                    }
                    text, reasoning, calls = completion.text, None, None
                    if prompt is not None:
                        text, reasoning, calls = parse_answer(tokenizer, text, prompt)
                    if self.cfg.split_think and not reasoning:
                        reasoning, text = split_think(text)
                    logprobs = (
                        _compact_logprobs(completion.token_ids, completion.logprobs, self.cfg.logprobs)
                        if self.cfg.logprobs is not None
                        else None
                    )
                    result = Result(req, idx, text, completion.finish_reason, reasoning, usage, logprobs, calls)
                    yield check_result(result, rules)

    def _chat(self, part: list[Request], params: list) -> list:
        """`LLM.chat` over `part`, one call per distinct set of tools (vLLM takes one `tools` per call)."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(part):
            groups.setdefault(json.dumps(req.tools, sort_keys=True), []).append(i)
        outputs: list = [None] * len(part)
        for key, members in groups.items():
            tools = json.loads(key)
            kwargs = {"tools": tools} if tools else {}
            conversations = [wire_messages(part[i].messages) for i in members]
            got = self.llm.chat(conversations, [params[i] for i in members], use_tqdm=False, **kwargs)
            for i, out in zip(members, got, strict=True):
                outputs[i] = out
        return outputs


def structured_outputs(fmt: dict | None):
    """An OpenAI `response_format` as vLLM's `StructuredOutputsParams` (vLLM ≥ 0.12), as vLLM's own server maps it."""
    if not fmt or fmt.get("type") == "text":
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if fmt["type"] == "json_object":
        return StructuredOutputsParams(json_object=True)
    if fmt["type"] == "json_schema":
        return StructuredOutputsParams(json=fmt["json_schema"]["schema"])
    return StructuredOutputsParams(structural_tag=json.dumps(fmt))


def _compact_logprobs(token_ids, steps, k: int) -> Logprobs | None:
    """vLLM's per-step {token_id: Logprob} dicts -> the one logprobs type (with the sampled token ids).

    A step holds the top-k tokens and the sampled one (which may rank below k): `top` keeps the top k.
    """
    if not steps:
        return None
    tokens, logprobs, top, ids = [], [], [], []
    for token_id, step in zip(token_ids, steps, strict=False):
        chosen = step[token_id]  # the sampled token is always in its step's dict
        tokens.append(chosen.decoded_token or "")
        logprobs.append(chosen.logprob)
        ids.append(token_id)
        ranked = sorted((lp for lp in step.values() if lp.rank is not None and lp.rank <= k), key=lambda lp: lp.rank)
        top.append([(lp.decoded_token or "", lp.logprob) for lp in ranked])
    return Logprobs.build(tokens, logprobs, top, ids)
