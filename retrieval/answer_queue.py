"""The line of questions waiting for a model, so that many people asking at once wait
in order, know how many are ahead, and are turned away when the wait would be too long.

Each question that asks a model takes a ticket in its pool's line and asks once fewer
tickets before it are live than the pool has slots (KB_LLM_SLOTS per endpoint:
llama.cpp's server answers one question at a time, vLLM batches many). A question whose
wait, estimated as the answers to finish before a slot frees times a recent answer's
duration, would pass KB_ANSWER_MAX_WAIT_SECONDS is turned away (`Full`) instead.

The line is kept in Django's cache, so that every web process counts the same questions:
Redis in production, this process's memory in the embedded default (one process). A
counter hands out tickets; each ticket is a key, `live` while its question waits or is
answered (with a lease, renewed as it goes, so that a killed process's tickets lapse)
and `gone` after. A reader that finds a ticket's key missing writes `gone` with `add`,
which fails if its owner wrote `live` first; an owner whose `add` fails takes another
ticket. So every ticket below one's own is live or gone for good, and the count of
questions ahead is exact.
"""

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

LIVE, GONE = "live", "gone"
# Long past the moment between a ticket's handing out and its owner's `add`; short, so
# that the embedded default's in-memory cache (300 entries) holds few.
GONE_SECONDS = 600
POLL_SECONDS = 0.25
# A waiting question's events come at least this often: a reader who left is noticed
# (the stream is closed at its next event) and the page sees the line move.
KEEPALIVE_SECONDS = 5.0
RENEW_SECONDS = 10.0
# The answer's duration until the line has seen one: SmolLM2-135M's median on two
# cores, five sources (bench/README.md, "Answers").
DEFAULT_ANSWER_SECONDS = 15.0


class Full(Exception):
    """The wait would pass KB_ANSWER_MAX_WAIT_SECONDS."""

    def __init__(self, ahead: int, wait_seconds: float) -> None:
        super().__init__(f"{ahead} questions ahead, about {wait_seconds:.0f} s")
        self.ahead = ahead
        self.wait_seconds = wait_seconds

    def retry_after(self) -> int:
        """Seconds until the wait should be within the bound again."""
        return max(1, math.ceil(self.wait_seconds - settings.KB_ANSWER_MAX_WAIT_SECONDS))


def _key(line: str, name: str) -> str:
    return f"kb:answers:{line}:{name}"


def _lease() -> int:
    # Longer than an answer may take, so a live question's ticket never lapses.
    return math.ceil(settings.KB_LLM_TIMEOUT) + 60


def answer_seconds(line: str) -> float:
    """A recent answer's duration in this line (from its turn to its last token)."""
    return float(cache.get(_key(line, "seconds")) or DEFAULT_ANSWER_SECONDS)


def wait_estimate(line: str, ahead: int, slots: int) -> float:
    """Seconds until a question with `ahead` live tickets before it gets a slot: the
    answers that must finish first, `slots` of them at a time."""
    if ahead < slots:
        return 0.0
    return (ahead - slots + 1) * answer_seconds(line) / slots


def _live_before(line: str, ticket: int) -> int:
    """Live tickets below `ticket`; missing ones are marked gone, and the head moves
    past the leading gone ones."""
    head = int(cache.get(_key(line, "head")) or 1)
    keys = {n: _key(line, f"t:{n}") for n in range(head, ticket)}
    found = cache.get_many(list(keys.values()))
    live, leading = 0, head
    for n, key in keys.items():
        state = found.get(key)
        if state is None and not cache.add(key, GONE, GONE_SECONDS):
            state = cache.get(key)  # its owner wrote it just now
        if state == LIVE:
            live += 1
        elif leading == n:
            leading = n + 1
    if leading > head:
        cache.set(_key(line, "head"), leading, None)
    return live


def in_line(line: str) -> int:
    """Questions waiting or being answered in this line now."""
    return _live_before(line, int(cache.get(_key(line, "seq")) or 0) + 1)


@dataclass
class Place:
    """A question's ticket in a line. `leave()` it however the question ends."""

    line: str
    ticket: int
    slots: int
    ahead: int  # live tickets before this one when it was last counted
    turn_at: float | None = None  # monotonic time its turn came
    renewed: float = field(default_factory=time.monotonic)
    left: bool = False

    @property
    def waiting(self) -> bool:
        return self.turn_at is None

    def count(self) -> int:
        self.ahead = _live_before(self.line, self.ticket)
        if self.ahead < self.slots and self.turn_at is None:
            self.turn_at = time.monotonic()
        return self.ahead

    def wait(self) -> Iterator[int]:
        """Until its turn: the questions ahead, at once, whenever the count changes and
        at least every KEEPALIVE_SECONDS."""
        shown, since = -1, 0.0
        while self.count() >= self.slots:
            if self.ahead != shown or time.monotonic() - since >= KEEPALIVE_SECONDS:
                shown, since = self.ahead, time.monotonic()
                yield self.ahead
            else:
                time.sleep(POLL_SECONDS)
            self.renew()

    def renew(self) -> None:
        """Keeps the ticket live (cheap to call often: it writes every RENEW_SECONDS)."""
        if time.monotonic() - self.renewed >= RENEW_SECONDS:
            self.renewed = time.monotonic()
            cache.touch(_key(self.line, f"t:{self.ticket}"), _lease())

    def leave(self, *, answered: bool = False) -> None:
        """Frees the place (once); an `answered` question's duration informs estimates."""
        if self.left:
            return
        self.left = True
        cache.set(_key(self.line, f"t:{self.ticket}"), GONE, GONE_SECONDS)
        if answered and self.turn_at is not None:
            took = time.monotonic() - self.turn_at
            known = cache.get(_key(self.line, "seconds"))
            # Recent answers weigh most: the model, the prompts and the load change.
            recent = took if known is None else 0.7 * known + 0.3 * took
            cache.set(_key(self.line, "seconds"), recent, None)


def join(line: str, slots: int, *, bounded: bool = True) -> Place:
    """A place at the back of the line. Raises Full, taking no place, when the wait
    would pass KB_ANSWER_MAX_WAIT_SECONDS (0: no bound), unless not `bounded`."""
    cache.add(_key(line, "seq"), 0, None)
    while True:
        ticket = int(cache.incr(_key(line, "seq")))
        if cache.add(_key(line, f"t:{ticket}"), LIVE, _lease()):
            break
    place = Place(line=line, ticket=ticket, slots=slots, ahead=0)
    place.count()
    wait = wait_estimate(line, place.ahead, slots)
    bound = settings.KB_ANSWER_MAX_WAIT_SECONDS
    if bounded and bound and wait > bound:
        place.leave()
        raise Full(place.ahead, wait)
    return place
