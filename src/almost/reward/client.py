"""A reward model served by ``almost rm serve``, behind the scorer's interface.

``--reward_model_name_or_path`` (rmsp, rl) and ``--judge rm:...`` (pairwise) take either a checkpoint
or the server's URL (``http://host:port``); ``almost.reward.model.load_scorer`` gives the one or the
other with the same ``score(conversations) -> list[float]``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from ..errors import AlmostError

# Where clients look for the bearer token of `almost rm serve --token_env ...` unless told otherwise.
TOKEN_ENV = "ALMOST_RM_TOKEN"


def is_url(name_or_path: str | None) -> bool:
    return bool(name_or_path) and name_or_path.startswith(("http://", "https://"))


class RemoteRewardScorer:
    """``score(conversations)`` by ``POST {url}/score`` in batches of ``batch_size`` conversations."""

    def __init__(
        self,
        url: str,
        token_env: str | None = None,
        batch_size: int = 64,
        timeout: float = 300.0,
        max_retries: int = 4,
        backoff: float = 1.0,
    ):
        self.url = url.rstrip("/")
        self._token = os.environ.get(token_env) if token_env else None  # in memory only, never written
        self.batch_size = max(1, batch_size)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(payload).encode() if payload is not None else None
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                try:
                    message = json.loads(e.read()).get("error", e.reason)
                except Exception:
                    message = e.reason
                if e.code < 500 and e.code != 429:
                    raise AlmostError(f"reward server {self.url} refused the request (HTTP {e.code}): {message}") from None
                last = f"HTTP {e.code}: {message}"
            except (urllib.error.URLError, OSError) as e:
                last = str(getattr(e, "reason", None) or e)
            except json.JSONDecodeError:
                last = "the reply is not JSON"
        raise AlmostError(f"reward server {self.url} kept failing after {self.max_retries} retries ({last})")

    def health(self) -> dict:
        """What the server says about itself; fails with one clear line when it is not reachable."""
        return self._request("GET", "/health")

    def score(self, conversations: Sequence[list[dict]], progress: bool = False) -> list[float]:
        rewards: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = list(conversations[start : start + self.batch_size])
            reply = self._request("POST", "/score", {"rows": [{"messages": c} for c in batch]})
            got = reply.get("rewards") if isinstance(reply, dict) else None
            if not isinstance(got, list) or len(got) != len(batch):
                raise AlmostError(
                    f"reward server {self.url} returned {len(got) if isinstance(got, list) else 'no'} rewards for {len(batch)} rows"
                )
            rewards.extend(float(r) for r in got)
        return rewards

    def score_pairs(
        self, first: Sequence[list[dict]], second: Sequence[list[dict]], progress: bool = False
    ) -> tuple[list[float], list[float]]:
        """Rewards of two answers per conversation, as ``RewardScorer.score_pairs`` returns them: both
        sides go to the server in one run of requests, which batches them again."""
        rewards = self.score([*first, *second], progress)
        return rewards[: len(first)], rewards[len(first) :]
