"""``almost rm serve``: a reward model behind HTTP, so that self-play, pairwise judging and other
tools on other machines can score with it.

``POST /score`` with ``{"rows": [...]}`` (or a bare list of rows); each row is ``{"prompt",
"response"}`` (the prompt as text or messages) or ``{"messages": [...]}`` ending with the assistant's
answer, the same rows ``almost rm score`` reads. The reply is ``{"rewards": [float, ...]}`` in the
order of the rows. ``GET /health`` answers ``{"status": "ok", "model": ...}``.

Scoring goes through ``RewardScorer`` (the one way rewards are read), one request at a time: the
model is not thread-safe, and batching within a request already fills it. A bad request gets a 4xx
with ``{"error": "one clear line"}``; a failure while scoring gets a 500; neither stops the server.
It binds to 127.0.0.1 unless told otherwise, and with ``--token_env`` it asks for that bearer token.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..config import parse
from ..errors import AlmostError
from .model import RewardScorerSettings, load_scorer, reward_model_path
from .score import conversations_to_score

MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass
class RewardServeConfig:
    """Settings of ``almost rm serve``."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Reward model from `almost rm train` (required)."})
    host: str = field(
        default="127.0.0.1", metadata={"help": "Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)."}
    )
    port: int = field(default=8100, metadata={"help": "Port to listen on (0: any free port, printed at start)."})
    token_env: str | None = field(
        default=None,
        metadata={
            "help": "Environment variable holding a token that requests must send as 'Authorization: Bearer ...' (unset: no token asked)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Conversations per forward pass."})
    max_length: int = field(default=1024, metadata={"help": "Longest text in tokens; longer ones lose their beginning."})
    max_rows: int = field(default=4096, metadata={"help": "Most rows one request may hold (larger ones get HTTP 413)."})
    dtype: str = field(default="auto", metadata={"help": "auto, bfloat16 or float32."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model repositories to run their own code."})


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def conversations_from_request(payload, max_rows: int) -> list[list[dict]]:
    """The request body → one conversation per row; RequestError (4xx) says what is wrong."""
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    if not isinstance(rows, list):
        raise RequestError(400, 'the body must be {"rows": [...]} or a list of rows')
    if len(rows) > max_rows:
        raise RequestError(413, f"{len(rows)} rows in one request; at most {max_rows} (send several requests)")
    conversations = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(400, f"row {i}: must be an object with 'prompt' + 'response' or 'messages'")
        try:
            columns = conversations_to_score(row, f"row {i}")
        except AlmostError as e:
            raise RequestError(400, str(e)) from None
        if list(columns) != ["reward"]:
            raise RequestError(400, f"row {i}: send 'prompt' + 'response' or 'messages' (one answer per row)")
        conversations.append(columns["reward"])
    return conversations


def make_server(scorer, host: str, port: int, token: str | None = None, max_rows: int = 4096, model_name: str = "") -> ThreadingHTTPServer:
    """An HTTP server scoring with ``scorer`` (anything with ``score(conversations) -> floats``)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "almost-rm"

        def log_message(self, format, *args):  # one line per request on stderr, without the client's address
            sys.stderr.write(f"almost rm serve: {format % args}\n")

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if token is None:
                return True
            sent = self.headers.get("Authorization", "")
            return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())

        def do_GET(self):
            if self.path.rstrip("/") != "/health":
                return self._send(404, {"error": f"no such path {self.path}; POST /score or GET /health"})
            if not self._authorized():
                return self._send(401, {"error": "missing or wrong bearer token"})
            self._send(200, {"status": "ok", "model": model_name})

        def do_POST(self):
            try:
                if self.path.rstrip("/") != "/score":
                    raise RequestError(404, f"no such path {self.path}; POST /score or GET /health")
                if not self._authorized():
                    raise RequestError(401, "missing or wrong bearer token")
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise RequestError(411, "a Content-Length header is required") from None
                if length > MAX_BODY_BYTES:
                    raise RequestError(413, f"body of {length} bytes; at most {MAX_BODY_BYTES}")
                try:
                    payload = json.loads(self.rfile.read(length))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise RequestError(400, f"the body is not JSON: {e}") from None
                conversations = conversations_from_request(payload, max_rows)
            except RequestError as e:
                # The body may be unread (wrong path or token): close rather than misread it as a request.
                self.close_connection = True
                return self._send(e.status, {"error": str(e)})
            try:
                with lock:
                    rewards = scorer.score(conversations) if conversations else []
            except Exception as e:  # the server stays up for the next request
                return self._send(500, {"error": f"scoring failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            self._send(200, {"rewards": [float(r) for r in rewards]})

    return ThreadingHTTPServer((host, port), Handler)


def run_serve(config: RewardServeConfig) -> None:
    path = reward_model_path(config.model_name_or_path)
    token = None
    if config.token_env:
        token = os.environ.get(config.token_env)
        if not token:
            raise AlmostError(f"--token_env {config.token_env}: that environment variable is empty or unset")
    scorer = load_scorer(
        path,
        RewardScorerSettings(
            batch_size=config.batch_size, max_length=config.max_length, dtype=config.dtype, trust_remote_code=config.trust_remote_code
        ),
    )
    try:
        server = make_server(scorer, config.host, config.port, token, config.max_rows, config.model_name_or_path)
    except OSError as e:
        raise AlmostError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    host, port = server.server_address[:2]
    print(f"almost rm serve: scoring with {path} at http://{host}:{port} (POST /score, GET /health); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    (config,) = parse("almost rm serve", [RewardServeConfig], argv, description=__doc__.split("\n\n")[0])
    try:
        run_serve(config)
    except KeyboardInterrupt:
        print("almost rm serve: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
