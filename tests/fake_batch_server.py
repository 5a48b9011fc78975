"""A loopback OpenAI server with the files and batches endpoints, as the API reference describes them.

    with FakeBatchServer(models=["teacher"]) as server:
        server.base_url            # http://127.0.0.1:PORT/v1
        server.created_batches()   # every batch created, oldest first (what was submitted, and when)

It is `FakeOpenAIServer` (chat answers, `malformed`, the request log) plus:
- `POST /v1/files` (multipart: `file`, `purpose`), `GET /v1/files` (`purpose`, `order`, `limit`, `after`;
  newest first), `GET /v1/files/{id}`, `GET /v1/files/{id}/content`;
- `POST /v1/batches` (`input_file_id`, `endpoint`, `completion_window`, `metadata`), `GET /v1/batches`
  (`limit`, `after`; newest first), `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`.

A batch moves one state per `steps_per_state` retrieves: validating -> in_progress -> finalizing ->
completed, or validating -> failed (`fate="failed"`), or in_progress -> expired (`fate="expired"`: the
first `expire_answered` requests are answered, the others get `batch_expired` error lines); a cancel
makes it cancelling, then cancelled on the next retrieve (the first `cancel_answered` answered).
`hold=True` keeps every batch where it is (a slow batch). When a batch finishes, each input line is
answered by the chat logic (`answer`: `malformed` applies) into the output file; `error_status`
(question -> HTTP status, `error_times` times) gives that request an error response in the error file.

Faults of the control plane: `lose_upload_answer` / `lose_create_answer` (the first K uploads or
creations are done, then the connection is dropped before the answer), `download_chunk` (file content
sent in pieces of that many bytes, `download_pause` seconds apart).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fake_openai_server import FakeOpenAIServer, _Handler, _question, error_body

_NEXT = {"validating": "in_progress", "in_progress": "finalizing", "finalizing": "completed"}


class FakeBatchServer(FakeOpenAIServer):
    def __init__(self, *args: Any, steps_per_state: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.steps_per_state = steps_per_state
        self.hold = False
        self.fate = "completed"
        self.fates: list[str] = []  # the fates of the next batches, in order (then `fate`)
        self.expire_answered = 0
        self.cancel_answered = 0
        self.error_status: dict[str, int] = {}
        self.error_times: int | None = None  # None: always
        self.lose_upload_answer = 0
        self.lose_create_answer = 0
        self.download_chunk = 0
        self.download_pause = 0.0
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._seq = itertools.count()
        self._errors_given: Counter[str] = Counter()
        self._state = threading.RLock()  # files and batches (the base's lock guards the request log)

    def start(self) -> FakeBatchServer:
        handler = type("Handler", (_BatchHandler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    # --- what the tests read -------------------------------------------------------------------------
    def created_batches(self) -> list[dict[str, Any]]:
        with self._state:
            return [dict(b) for b in sorted(self.batches.values(), key=lambda b: b["_seq"])]

    def uploads(self) -> list[dict[str, Any]]:
        with self._state:
            return [f for f in sorted(self.files.values(), key=lambda f: f["_seq"]) if f["purpose"] == "batch"]

    def submitted_custom_ids(self) -> Counter:
        """How many times each custom_id was submitted in a batch (the input files of all created batches)."""
        out: Counter[str] = Counter()
        for batch in self.created_batches():
            for line in self.files[batch["input_file_id"]]["data"].splitlines():
                out[json.loads(line)["custom_id"]] += 1
        return out

    def content_downloads(self, file_id: str) -> int:
        return sum(1 for r in self.requests() if r["method"] == "GET" and r["path"] == f"/v1/files/{file_id}/content")

    # --- the state machine -----------------------------------------------------------------------------
    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        f = {
            "id": f"file-{uuid.uuid4().hex[:24]}",
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "data": data,
            "_seq": next(self._seq),
        }
        self.files[f["id"]] = f
        return f

    def _new_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:24]}",
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "_seq": next(self._seq),
            "_polls": 0,
            "_fate": self.fates.pop(0) if self.fates else self.fate,
            "_created": time.monotonic(),
        }
        self.batches[batch["id"]] = batch
        return batch

    def _step(self, batch: dict[str, Any]) -> None:
        """One retrieve: move the batch on when its turn has come (and the test does not hold it)."""
        if batch["status"] == "cancelling":
            self._finish(batch, "cancelled", answered=self.cancel_answered)
            return
        if self.hold or batch["status"] not in _NEXT:
            return
        batch["_polls"] += 1
        if batch["_polls"] % self.steps_per_state:
            return
        status, fate = batch["status"], batch["_fate"]
        lines = self.files[batch["input_file_id"]]["data"].splitlines()
        batch["request_counts"]["total"] = len(lines)
        if status == "validating" and fate == "failed":
            batch["status"], batch["failed_at"] = "failed", int(time.time())
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached.", "line": None}],
            }
        elif status == "in_progress" and fate == "expired":
            self._finish(batch, "expired", answered=self.expire_answered)
        elif _NEXT[status] == "completed":
            self._finish(batch, "completed", answered=len(lines))
        else:
            batch["status"] = _NEXT[status]
            batch[f"{batch['status']}_at"] = int(time.time())

    def _finish(self, batch: dict[str, Any], status: str, answered: int) -> None:
        """Answer the first `answered` lines (the others get an error of the batch's end), write the files."""
        code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(status)
        out, err = self.answer_lines(self.files[batch["input_file_id"]]["data"], answered, code)
        batch["request_counts"].update(total=len(out) + len(err), completed=len(out), failed=len(err))
        if out:
            data = "".join(json.dumps(o) + "\n" for o in out).encode()
            batch["output_file_id"] = self._new_file(data, "batch_output.jsonl", "batch_output")["id"]
        if err:
            data = "".join(json.dumps(o) + "\n" for o in err).encode()
            batch["error_file_id"] = self._new_file(data, "batch_errors.jsonl", "batch_output")["id"]
        batch["status"] = status
        batch[f"{status}_at"] = int(time.time())

    def answer_lines(
        self, data: bytes, answered: int | None = None, code: str | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(output lines, error lines) for a batch input file: what a provider (or `vllm run-batch`) writes.

        The first `answered` requests (all when None) are answered; the others get an error `code`.
        """
        out, err = [], []
        for k, raw in enumerate(data.splitlines()):
            line = json.loads(raw)
            entry = {"id": f"batch_req_{uuid.uuid4().hex[:20]}", "custom_id": line["custom_id"]}
            if answered is not None and k >= answered and code:
                message = f"This request could not be executed ({code})."
                err.append({**entry, "response": None, "error": {"code": code, "message": message}})
                continue
            body = line["body"]
            question = _question(body.get("messages") or [])
            status_code = self.error_status.get(question)
            if status_code and (self.error_times is None or self._errors_given[question] < self.error_times):
                self._errors_given[question] += 1
                response_body = error_body("simulated error", "server_error", status_code)
                err.append({**entry, "response": self._response(status_code, response_body), "error": None})
                continue
            if body.get("model") not in self.models:
                response_body = error_body(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404)
                err.append({**entry, "response": self._response(404, response_body), "error": None})
                continue
            answer = self.answer(body)
            if isinstance(answer, bytes):
                try:
                    answer = json.loads(answer)
                except ValueError:
                    answer = answer.decode("utf-8", "replace")
            out.append({**entry, "response": self._response(200, answer), "error": None})
        return out, err

    @staticmethod
    def _response(status_code: int, body: Any) -> dict[str, Any]:
        return {"status_code": status_code, "request_id": f"req_{uuid.uuid4().hex[:16]}", "body": body}


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_") and k != "data"}


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    """A cursor page, newest first: `after` is the id the previous page ended with."""
    items = sorted(items, key=lambda o: o["_seq"], reverse=True)
    if "after" in query:
        ids = [o["id"] for o in items]
        after = query["after"][0]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit = int(query.get("limit", ["20"])[0])
    data = [_public(o) for o in items[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }


class _BatchHandler(_Handler):
    fake: FakeBatchServer

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        path, query = url.path.rstrip("/"), parse_qs(url.query)
        if not path.startswith(("/v1/files", "/v1/batches")):
            super().do_GET()
            return
        entry = self._entry(None)
        if not self._authorized(entry):
            return
        fake = self.fake
        parts = path.split("/")[2:]  # files | files, ID | files, ID, content | batches ...
        with fake._state:
            if parts == ["files"]:
                files = [f for f in fake.files.values() if f["purpose"] == query.get("purpose", [f["purpose"]])[0]]
                payload: Any = _page(files, query)
            elif parts == ["batches"]:
                payload = _page(list(fake.batches.values()), query)
            elif parts[0] == "files" and parts[1] in fake.files and len(parts) == 3 and parts[2] == "content":
                payload = fake.files[parts[1]]["data"]
            elif parts[0] == "files" and parts[1] in fake.files and len(parts) == 2:
                payload = _public(fake.files[parts[1]])
            elif parts[0] == "batches" and parts[1] in fake.batches and len(parts) == 2:
                fake._step(fake.batches[parts[1]])
                payload = _public(fake.batches[parts[1]])
            else:
                payload = None
        if payload is None:
            self._send(entry, 404, error_body(f"No such object: {path}", "invalid_request_error", None))
        elif isinstance(payload, bytes):
            self._send_content(entry, payload)
        else:
            self._send(entry, 200, payload)

    def _send_content(self, entry: dict[str, Any], data: bytes) -> None:
        fake = self.fake
        step = fake.download_chunk or len(data) or 1
        self.fake._update(entry, status=200)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(0, len(data), step):
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
                if fake.download_pause and i + step < len(data):
                    fake._closing.wait(fake.download_pause)
        except OSError:
            self.close_connection = True
            return
        self.fake._update(entry, answered=time.monotonic())

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path.rstrip("/")
        if not path.startswith(("/v1/files", "/v1/batches")):
            super().do_POST()
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake = self.fake
        if path == "/v1/files":
            fields = _multipart(self.headers.get("Content-Type", ""), raw)
            entry = self._entry({k: v if isinstance(v, str) else "<file>" for k, v in fields.items()})
            if not self._authorized(entry):
                return
            upload = fields.get("file")
            if not isinstance(upload, tuple) or fields.get("purpose") != "batch":
                self._send(entry, 400, error_body("expected a file and purpose=batch", "invalid_request_error", None))
                return
            with fake._state:
                f = fake._new_file(upload[1], upload[0], "batch")
                lose = fake.lose_upload_answer > 0
                fake.lose_upload_answer -= lose
            self._answer_or_drop(entry, _public(f), lose)
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        entry = self._entry(body)
        if not self._authorized(entry):
            return
        with fake._state:
            if path == "/v1/batches":
                if not isinstance(body, dict) or body.get("input_file_id") not in fake.files:
                    payload, status = error_body("No such input file.", "invalid_request_error", None), 400
                else:
                    payload, status = _public(fake._new_batch(body)), 200
                lose = status == 200 and fake.lose_create_answer > 0
                fake.lose_create_answer -= lose
            elif path.endswith("/cancel") and path.split("/")[3] in fake.batches:
                batch = fake.batches[path.split("/")[3]]
                lose = False
                if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                    message = f"Cannot cancel a batch with status {batch['status']}."
                    payload, status = error_body(message, "invalid_request_error", None), 400
                else:
                    batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
                    payload, status = _public(batch), 200
            else:
                payload, status, lose = error_body(f"No route {path}", "invalid_request_error", None), 404, False
        if status != 200:
            self._send(entry, status, payload)
        else:
            self._answer_or_drop(entry, payload, lose)

    def _answer_or_drop(self, entry: dict[str, Any], payload: Any, lose: bool) -> None:
        if lose:  # done, but the client never hears of it
            self.fake._update(entry, status="dropped")
            self.close_connection = True
            return
        self._send(entry, 200, payload)


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """multipart/form-data -> {name: text, or (filename, bytes) for a file part} (stdlib `email` parser)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        fields[name] = (filename, data) if filename is not None else data.decode()
    return fields
