"""The pure pieces of self-play (RMSP), tested without any model: the user simulator's prompt and the
verdict on what it wrote, the choice among an assistant turn's candidates, and each engine call's seed."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..chat import transcript
from ..digests import fingerprint
from ..feedback.demos import SEPARATOR, Demonstrations
from ..feedback.pg import rouge_l, rouge_tokens
from ..stages import RESAMPLED_REASONS

# The user simulator writes one Human turn: it ends where the model starts the assistant's reply.
USER_STOP = (SEPARATOR, "\nAssistant:", "\nHuman:")
USER_END_MARKER = "[END]"
MIN_USER_TURN_CHARS = 8
_GOODBYE = re.compile(r"^(thanks|thank you|thank u|great,? thanks|ok,? thanks|bye|goodbye)\b", re.I)
# Why a user turn is re-sampled (RESAMPLED_REASONS, counted in the summary's USER_TURNS_KEY for the
# report to read instead of recounting); every other verdict (ended, unusable) is final at once.
USER_REPEATS, USER_ROLE_SWAP = RESAMPLED_REASONS
# How replies open, never how a person asks: the simulator is writing the assistant's part.
_ROLE_SWAP = re.compile(
    r"^(sure|certainly|of course|absolutely|here is|here are|here['’]s|as an ai|as a language model|i['’]d be happy|i would be happy|"
    r"i['’]m happy to|great question|you['’]re welcome)\b",
    re.I,
)


def user_prompt(simulator: Demonstrations, n_shot: int, messages: list[dict]) -> str:
    """The user simulator's examples, then the dialogue so far, ending with ``Human:`` for the next user turn."""
    return f"{simulator.static_prompt(n_shot)}{transcript(messages, strip=True)}\n\nHuman:"


def repeat_score(turn: str, messages: list[dict]) -> tuple[float, bool]:
    """(highest ROUGE-L F of ``turn`` against any earlier turn, whether it quotes a whole earlier answer).

    ROUGE-L as PG's near-duplicate filter computes it (rouge_score's tokens, no stemming).
    """
    tokens = rouge_tokens(turn)
    joined = f" {' '.join(tokens)} "
    best, quotes = 0.0, False
    for m in messages:
        other = rouge_tokens(m["content"])
        if not tokens or not other:
            continue
        best = max(best, rouge_l(other, tokens))
        # Only answers: a follow-up may rightly contain an earlier question ("How do plants grow in winter?").
        quotes |= m["role"] == "assistant" and f" {' '.join(other)} " in joined
    return best, quotes


def user_turn_verdict(text: str, messages: list[dict], repeat_threshold: float) -> tuple[str, str | None, float | None]:
    """(cleaned user turn, why it is not usable or None, its highest ROUGE-L F against an earlier turn
    or None when it ended before that check).

    ``user_repeats`` and ``user_role_swap`` are re-sampled; the other reasons end the dialogue.
    """
    turn = text.strip()
    if USER_END_MARKER in turn:
        return turn, "user_ended", None
    if len(turn) < MIN_USER_TURN_CHARS:
        return turn, "user_turn_unusable", None
    if _GOODBYE.match(turn) and "?" not in turn:
        return turn, "user_ended", None
    score, quotes = repeat_score(turn, messages)
    if quotes or score >= repeat_threshold:
        return turn, USER_REPEATS, score
    # A question or request after "Sure," is still the user's ("Sure, but what about cacti?").
    if _ROLE_SWAP.match(turn) and "?" not in turn:
        return turn, USER_ROLE_SWAP, score
    return turn, None, score


def select_candidate(
    rewards: Sequence[float | None], min_reward: float | None = None, min_margin: float | None = None
) -> tuple[int | None, str | None]:
    """Index of the candidate to keep (argmax reward, first on ties) or None with the reason.

    ``None`` rewards are BAD candidates. The optional gates: the best reward is at least
    ``min_reward``, or it beats the runner-up by at least ``min_margin`` (with a single usable
    candidate the margin gate passes: every other candidate was BAD). With both set, passing either
    keeps the answer.
    """
    scored = [(r, i) for i, r in enumerate(rewards) if r is not None]
    if not scored:
        return None, "no_usable_candidate"
    best_reward, best = max(scored, key=lambda x: (x[0], -x[1]))
    failed = []
    if min_reward is not None and best_reward < min_reward:
        failed.append("below_min_reward")
    if min_margin is not None:
        others = sorted((r for r, i in scored if i != best), reverse=True)
        if others and best_reward - others[0] < min_margin:
            failed.append("margin_below_min")
    gates = (min_reward is not None) + (min_margin is not None)
    if failed and len(failed) == gates:
        return None, "_and_".join(failed)
    return best, None


def unit_seed(seed: int, batch: int, turn: int, role: str, attempt: int = 0) -> int:
    """The sampling seed of one engine call: fixed by the unit of work (and the retry), not by the call order."""
    unit = {"seed": seed, "batch": batch, "turn": turn, "role": role}
    if attempt:  # a first try's seed is the one of runs made without retries, whose files still resume
        unit["attempt"] = attempt
    return int(fingerprint(unit), 16) % (2**31)
