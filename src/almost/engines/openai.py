"""A served model behind an OpenAI-compatible **completions** endpoint (vLLM, SGLang, TGI, ...).

Raw text completion like the in-process engines: ``POST {base_url}/completions`` with the prompt as
it is (no chat template), one request per prompt with its ``n`` samples, at most ``concurrency``
requests in flight. Several base URLs are used in turn (round-robin), and a failed request moves on
to the next one, so one run can use several servers and survive one going away.

Transient failures (HTTP 429 and 5xx, refused or dropped connections, timeouts) are retried with
exponential backoff; after the last retry the call fails with one clear line (``AlmostError``).
Nothing of a failed call is returned, so the stage writes nothing for it and a rerun resumes where
the last written rows end.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from tqdm.auto import tqdm

from ..errors import AlmostError
from .base import Sampling, truncate_at_stop

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0


class TransientError(Exception):
    """A failure worth retrying (the server is busy, restarting or unreachable)."""


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both mean the ``/v1`` API root."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise AlmostError(f"--base_url must be an http(s) URL, got {url!r}")
    return url if url.endswith("/v1") else url + "/v1"


def split_base_urls(values: Sequence[str] | str | None) -> list[str]:
    """Flags and YAML give a list, or one string with commas: every URL once, in order."""
    if isinstance(values, str):
        values = [values]
    urls = [normalize_base_url(u) for v in values or () for u in v.split(",") if u.strip()]
    return list(dict.fromkeys(urls))


class OpenAIEngine:
    """``generate(prompts, sampling)`` through ``/v1/completions`` on one or several servers."""

    name = "openai"
    # No local tokenizer: callers that would apply a chat template (pairwise answers, the llm judge)
    # fall back to the plain "Human: ... Assistant:" transcript, which any completions server takes.
    tokenizer = None

    def __init__(
        self,
        base_urls: Sequence[str] | str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 600.0,
        max_retries: int = 8,
        backoff: float = 1.0,
        sleep: Callable[[float], None] | None = None,
    ):
        self.base_urls = split_base_urls(base_urls)
        if not self.base_urls:
            raise AlmostError("--backend openai needs --base_url (the server's URL, e.g. http://127.0.0.1:8000/v1)")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise AlmostError("--concurrency must be at least 1, --max_retries at least 0 and --request_timeout positive")
        self.model = model
        self._api_key = api_key  # kept in memory only: never logged, never written
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._sleep = sleep  # tests record the backoff delays instead of waiting them out
        self._abort = threading.Event()  # set when a call fails: its other requests stop retrying
        self._next_url = itertools.cycle(range(len(self.base_urls)))
        self._lock = threading.Lock()

    def _url(self) -> str:
        with self._lock:
            return self.base_urls[next(self._next_url)]

    def request_body(self, prompt: str, sampling: Sampling, seed: int | None) -> dict:
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
            "n": sampling.n,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if seed is not None:
            body["seed"] = seed
        return body

    def _post(self, url: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(f"{url}/completions", data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = _error_message(e)
            if e.code in RETRY_STATUSES:
                raise TransientError(f"HTTP {e.code} from {url}: {detail}") from None
            # 4xx other than the few above: the request itself is wrong; retrying cannot help.
            raise AlmostError(f"{url}/completions refused the request (HTTP {e.code}): {detail}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            raise TransientError(f"{url}: {getattr(e, 'reason', None) or e!r}") from None
        except json.JSONDecodeError:
            raise TransientError(f"{url}/completions answered something that is not JSON") from None

    def _complete(self, prompt: str, sampling: Sampling, seed: int | None) -> list[str]:
        body = self.request_body(prompt, sampling, seed)
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** (attempt - 1))
                if self._sleep is not None:
                    self._sleep(delay)
                elif self._abort.wait(delay):
                    break
            url = self._url()  # a retry goes to the next server when there are several
            try:
                reply = self._post(url, body)
            except TransientError as e:
                last = str(e)
                continue
            choices = reply.get("choices") if isinstance(reply, dict) else None
            if not isinstance(choices, list) or len(choices) != sampling.n:
                raise AlmostError(
                    f"{url}/completions returned {len(choices) if isinstance(choices, list) else 'no'} choices for n={sampling.n}"
                )
            choices = sorted(choices, key=lambda c: c.get("index", 0))
            return [truncate_at_stop(c.get("text") or "", sampling.stop) for c in choices]
        raise AlmostError(
            f"the completions endpoint kept failing after {self.max_retries} retries ({last}); "
            "rerun the same command once the server is back: finished rows are kept"
        )

    def close(self) -> None:
        pass  # one connection per request: nothing is held between calls

    def generate(self, prompts: Sequence[str], sampling: Sampling, desc: str | None = None) -> list[list[str]]:
        results: list[list[str] | None] = [None] * len(prompts)
        # One seed per prompt, as on the vllm engine: a prompt gets the same samples whatever its batch.
        seeds = [None if sampling.seed is None else sampling.seed + i for i in range(len(prompts))]
        self._abort.clear()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts))), thread_name_prefix="openai")
        try:
            with tqdm(total=len(prompts), desc=desc or "generate", unit="prompt", leave=False) as bar:
                futures = {pool.submit(self._complete, p, sampling, s): i for i, (p, s) in enumerate(zip(prompts, seeds))}
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in finished:
                        if f.exception() is not None:
                            raise f.exception()
                        results[futures[f]] = f.result()
                        bar.update(1)
        except BaseException:
            # One request failed for good (or the user pressed Ctrl-C): the call fails as a whole,
            # so the others need not wait out their backoff.
            self._abort.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results  # type: ignore[return-value]


def _error_message(e: urllib.error.HTTPError) -> str:
    """The server's own message (OpenAI: ``{"error": {"message": ...}}``; vLLM: ``{"message": ...}``)."""
    try:
        raw = e.read().decode("utf-8", "replace")
    except Exception:
        return str(e.reason)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip().splitlines()[0][:300] if raw.strip() else str(e.reason)
    error = data.get("error", data) if isinstance(data, dict) else data
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or e.reason).splitlines()[0][:300]


def api_key_from_env(name: str | None) -> str | None:
    """The key lives in the environment only; an unset or empty variable means no key is sent."""
    return (os.environ.get(name) or None) if name else None
