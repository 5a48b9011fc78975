"""In-process generation with transformers: the embedded default that runs on a laptop CPU.

Samples are sorted by prompt length and generated in batches (left padding); a batch stops as soon
as every row has produced its end-of-turn token. With `logprobs=K` it records, per generated token, the
model's raw (temperature 1) log-probability and its top K, in the same compact form as the other
backends; that holds batch × steps × vocabulary logits while a batch runs (lower `batch_size` for long
outputs). Not covered: speculative decoding, KV-cache reuse across samples of one prompt, multi-GPU —
use the vllm or openai backends for real throughput.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from seqdistill.backends.base import Backend, Failure, Request, Result
from seqdistill.backends.chat_template import check_tool_rendering, parse_answer, render_prompt
from seqdistill.backends.validate import AnswerRules, check_result
from seqdistill.models import load_model
from seqdistill.records import Logprobs

log = logging.getLogger(__name__)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, cfg):
        super().__init__(cfg)
        import torch

        self._torch = torch
        self.model, self.tokenizer = load_model(cfg.model, cfg.dtype)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        if cfg.sampling.seed is not None:
            torch.manual_seed(cfg.sampling.seed)
        if cfg.response_format:  # transformers has no constrained decoding (docs/structured-output.md)
            log.warning(
                "the transformers backend does not constrain decoding to response_format: samples may not match "
                "the schema; filter them with --check json (or use the vllm / openai backends)"
            )

    def generate(self, requests: list[Request], stop: threading.Event) -> Iterator[Result | Failure]:
        rules = AnswerRules.for_config(self.cfg)
        self._parses_tools = check_tool_rendering(self.tokenizer, requests, self.cfg.model or "", self.name)
        rows = [(req, idx) for req in requests for idx in req.sample_indices]
        texts = {id(req): self._render(req) for req in requests}
        lengths = {
            key: len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for key, text in texts.items()
        }
        rows.sort(key=lambda row: lengths[id(row[0])])
        bs = self.cfg.batch_size
        for start in range(0, len(rows), bs):
            if stop.is_set():
                return
            batch = rows[start : start + bs]
            for result in self._generate_batch(batch, [texts[id(req)] for req, _ in batch]):
                yield check_result(result, rules)  # e.g. an answer that is only an end-of-turn token: empty

    def _render(self, req: Request) -> str:
        return render_prompt(self.tokenizer, req)

    def _generate_batch(self, batch: list[tuple[Request, int]], texts: list[str]) -> list[Result]:
        torch, tok, s = self._torch, self.tokenizer, self.cfg.sampling
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs = {"max_new_tokens": s.max_tokens, "pad_token_id": tok.pad_token_id}
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kwargs.update(stop_strings=s.stop, tokenizer=tok)
        if self.cfg.logprobs is not None:
            kwargs.update(return_dict_in_generate=True, output_logits=True)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        sequences = out.sequences if self.cfg.logprobs is not None else out
        new = sequences[:, enc["input_ids"].shape[1] :]
        eos_ids = set(_as_list(self.model.generation_config.eos_token_id) + _as_list(tok.eos_token_id))
        results = []
        for row, ((req, idx), ids) in enumerate(zip(batch, new.tolist(), strict=True)):
            end = next((i for i, t in enumerate(ids) if t in eos_ids), None)
            kept = ids if end is None else ids[: end + 1]
            text = tok.decode(kept, skip_special_tokens=True)
            finish = "stop" if end is not None else "length"
            if s.stop and end is None and any(text.rstrip().endswith(x) for x in s.stop):
                finish = "stop"
            usage = {"prompt_tokens": int(enc["attention_mask"][row].sum()), "completion_tokens": len(kept)}
            content = ids[: end if end is not None else len(ids)]  # the end-of-turn token is not text
            logprobs = self._logprobs(out.logits, row, content) if self.cfg.logprobs is not None else None
            answer, reasoning, calls = text.strip(), None, None
            if req.tools and self._parses_tools:
                answer, reasoning, calls = parse_answer(tok, answer, texts[row])
            results.append(Result(req, idx, answer, finish, reasoning, usage, logprobs, calls))
        return results

    def _logprobs(self, logits, row: int, ids: list[int]) -> Logprobs | None:
        """One row's generated tokens with their raw (temperature 1) logprobs and top-k, from the per-step logits."""
        if not ids:
            return None
        torch, k = self._torch, self.cfg.logprobs
        steps = torch.log_softmax(torch.stack([logits[i][row] for i in range(len(ids))]).float(), dim=-1)
        chosen = steps.gather(1, torch.tensor(ids, device=steps.device).unsqueeze(1)).squeeze(1).tolist()
        top = None
        if k:
            values, top_ids = steps.topk(k, dim=-1)
            top = [
                [(self._text(t), v) for t, v in zip(tid, val, strict=True)]
                for tid, val in zip(top_ids.tolist(), values.tolist(), strict=True)
            ]
        return Logprobs.build([self._text(t) for t in ids], chosen, top, ids)

    def _text(self, token_id: int) -> str:
        """A token as servers report it: its text, not its vocabulary entry (' the', not 'Ġthe')."""
        return self.tokenizer.convert_tokens_to_string([self.tokenizer.convert_ids_to_tokens(token_id)])

    def close(self) -> None:
        self.model = None


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
