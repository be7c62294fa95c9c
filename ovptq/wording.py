"""Words for log lines and messages: counted nouns, capped lists of names, an SQNR's health."""

from __future__ import annotations

from collections.abc import Iterable

SHOWN = 3   # names a log line lists before "and N more"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """'1 repair', '2 repairs' (`plural` for nouns that do not take an s)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def listed(names: Iterable[str], joiner: str = ", ", shown: int = SHOWN) -> str:
    """The first `shown` names joined, then 'and N more' for the rest: 'a, b, c and 22 more'."""
    names = list(names)
    head = joiner.join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def health(sqnr_db: float, healthy_db: float) -> str:
    """An output SQNR against the safety net's threshold: 'healthy (>= 18 dB)' or 'below the healthy 18 dB'."""
    return f"healthy (>= {healthy_db:g} dB)" if sqnr_db >= healthy_db else f"below the healthy {healthy_db:g} dB"
