"""`Pace`: one request rate per provider key, shared by creates and polls, that stays
unlimited until the provider refuses enough requests with 429, then is discovered
(`AdaptiveRate`); `ThrottleShare` tells a capacity signal from stray throttles;
`CappedPace` adds a user's fixed ceiling for one kind of request.
"""

from __future__ import annotations

import math

from ._aimd import AdaptiveRate, AIMDLimit

__all__ = ["CappedPace", "Pace", "ThrottleShare", "fixed_rate"]


class ThrottleShare:
    """Answers and throttles (429/503) of one provider key, over about the last second.

    A few stray throttles among many answers (a flaky gateway, a fault injector) are not a
    limit being hit. Before any pace exists, a throttle is a capacity signal only when at
    least 3 of the recent answers, and at least ``NOISE`` of them (of ``ANSWERS`` answers
    at least, unless the share is `HEAVY`), were throttles. Once a
    pace runs (the provider has shown a limit), every throttle is one: a smoothly paced
    client that goes just over a limit gets only a few. Either threshold is raised when a
    decrease turns out not to have helped (see `Pace`): above the share of throttles that
    caused it, decaying back over ``NOISE_MEMORY`` seconds.
    """

    NOISE = 0.02
    #: Before a pace exists, a share of throttles below `HEAVY` counts among this many
    #: answers at least.
    ANSWERS = 50
    #: A share of throttles this high is a limit, whatever else happens.
    HEAVY = 0.25
    NOISE_MEMORY = 60.0
    #: The weight of the latest answer in `recent`.
    RECENT = 0.1
    #: `recent` at or above this: the provider refuses (nearly) every request now.
    WALL = 0.25

    __slots__ = (
        "_answers",
        "_before",
        "_noise",
        "_noise_at",
        "_start",
        "_throttles",
        "answers",
        "recent",
        "throttles",
    )

    def __init__(self) -> None:
        self._start = -math.inf
        self._answers = 0
        self._throttles = 0
        self._before = (0, 0)  # the previous second's (answers, throttles)
        self._noise = 0.0  # a share found to be noise (0: none yet)
        self._noise_at = -math.inf
        self.answers = 0
        """Every answer counted (throttles included)."""
        self.throttles = 0
        """Every throttle counted."""
        self.recent = 0.0
        """The share of throttles among about the last ``1 / RECENT`` answers (a moving
        average): near 1 when the provider refuses nearly everything (a limit was hit:
        a wall), near the noise when throttles are scattered."""

    def _roll(self, now: float) -> None:
        elapsed = now - self._start
        if elapsed >= 1.0:
            self._before = (self._answers, self._throttles) if elapsed < 2.0 else (0, 0)
            self._start = now
            self._answers = self._throttles = 0

    def answered(self, now: float) -> None:
        if now - self._start >= 1.0:
            self._roll(now)
        self._answers += 1
        self.answers += 1
        self.recent -= self.RECENT * self.recent

    def throttled(self, now: float) -> None:
        self._roll(now)
        self._answers += 1
        self._throttles += 1
        self.answers += 1
        self.throttles += 1
        self.recent += self.RECENT * (1.0 - self.recent)

    def share(self) -> float:
        """Throttles among the answers of the current and the previous second."""
        answers = self._answers + self._before[0]
        return (self._throttles + self._before[1]) / answers if answers else 0.0

    def answer_rate(self, now: float, accepted: bool = True) -> float:
        """Answers that were not throttles (``accepted=False``: all answers) per second,
        over about the last second (a sliding-window estimate)."""
        elapsed = now - self._start
        if not 0.0 <= elapsed < 2.0:
            return 0.0
        current, before = self._answers, self._before[0]
        if accepted:
            current -= self._throttles
            before -= self._before[1]
        if elapsed >= 1.0:
            return current / elapsed
        return before * (1.0 - elapsed) + current

    def threshold(self, now: float, paced: bool = False) -> float:
        """The share of throttles above which they are a capacity signal."""
        base = 0.0 if paced else self.NOISE
        if self._noise <= base:
            return base
        fading: float = 0.5 ** ((now - self._noise_at) / (self.NOISE_MEMORY / 4))
        return base + (self._noise - base) * fading

    def signals(self, now: float, paced: bool = False) -> bool:
        """Whether the recent throttles are a capacity signal (call after `throttled`)."""
        throttles = self._throttles + self._before[1]
        if paced:
            return throttles >= 1 and self.share() >= self.threshold(now, True)
        if throttles < 3:
            return False
        share = self.share()
        if share >= self.HEAVY:
            return True
        # A light share is a signal only among enough answers: 3 throttles among the
        # first 20 answers of a batch can be chance.
        answers = self._answers + self._before[0]
        return answers >= self.ANSWERS and share >= self.threshold(now)

    def heavy(self) -> bool:
        """Whether the recent throttles are too many to be noise."""
        return self._throttles + self._before[1] >= 3 and self.share() >= self.HEAVY

    def is_noise(self, now: float, share: float, paced: bool = False) -> None:
        """A share of throttles turned out not to be a limit: ignore it from now on."""
        self._noise = min(self.HEAVY, max(self.threshold(now, paced), 1.5 * share))
        self._noise_at = now


def fixed_rate(per_second: float | None) -> AdaptiveRate | None:
    """A user's ceiling as a fixed pace (one second's burst); ``None``: no ceiling."""
    if per_second is None:
        return None
    limit = AIMDLimit(per_second, floor=min(1.0, per_second), ceiling=per_second)
    return AdaptiveRate(limit, burst=per_second)


class Pace:
    """The request rate of one provider key, creates and polls together, discovered.

    A provider's limit (a window or a token bucket of unknown size) counts every request
    of a key, so one rate covers them all: creates and polls take their turns in one line.
    It is not limited until the provider refuses: until then it only counts what is sent.
    The first capacity signal (429s above the noise, see `ThrottleShare`) starts an
    `AdaptiveRate` just under the rate the provider accepted over the last second, paced
    one request at a time (no bursts), which then grows while it holds requests back (back
    towards where it was quickly, beyond it by about 2 % a second, faster the longer no
    request was refused: a rare probe) and shrinks at most once
    per congestion epoch (about a second) to 90 % of what the provider accepted over the
    last second (of the rate itself when that is lower). A ``Retry-After`` pauses every
    request of the key while it is paced.

    Every decrease is tested: if among the answers to requests sent after it (and after
    its pause) the share of throttles did not fall to a quarter, slowing down did not help,
    so they were not a rate limit (random 429s do not go away when a client slows down, a
    limit's do): the decrease is undone (a pace it started is dropped) and such a share
    counts as noise from then on. A share of `ThrottleShare.HEAVY` or more is never taken
    for noise.
    """

    #: After a decrease (and its pause): answers before the test window (requests still
    #: sent at the old rate), and the window's length, in seconds.
    SETTLE = 0.25
    WINDOW = 1.0
    #: The decrease helped when the share of throttles in the window fell to this share
    #: of what it was (a limit's throttles stop; random ones go on at about the same share).
    HELPED = 0.25
    #: Fewer answers in the window than this (or than 4 throttles' worth at the share
    #: tested, up to ``MOST_ANSWERS``): the window grows, up to ``LONGEST`` seconds; then
    #: the test says nothing and the decrease stays.
    TEST_ANSWERS = 20
    MOST_ANSWERS = 100
    LONGEST = 4.0
    #: The share of what the provider accepted that a decrease goes down to.
    DECREASE = 0.9
    #: Seconds without a decrease after which the rate grows faster and faster (probes).
    PROBE = 5.0
    #: Requests due within this many seconds of each other go together (see
    #: `AdaptiveRate`): smooth at any window a provider counts in, but one wake-up of the
    #: client (and of the provider) for several requests.
    GRAIN = 0.02

    __slots__ = (
        "_count",
        "_previous",
        "_test_at",
        "_test_before",
        "_test_end",
        "_test_opened",
        "_test_share",
        "_test_snapshot",
        "_test_started",
        "_window_start",
        "rate",
        "share",
    )

    def __init__(self) -> None:
        self.rate: AdaptiveRate | None = None
        self._window_start = -math.inf
        self._count = 0
        self._previous = -1  # the previous window's count (-1: none, idle before)
        self.share = ThrottleShare()
        self._test_at = math.inf  # the next step of a running decrease test
        self._test_end = -math.inf
        self._test_opened = -math.inf
        self._test_snapshot = (0, 0)
        self._test_share = 0.0
        self._test_before = 0.0
        self._test_started = False

    @property
    def value(self) -> float | None:
        """Requests per second allowed now (``None``: not limited)."""
        return None if self.rate is None else self.rate.rate

    def reserve(self, now: float) -> float:
        """Take one slot; return the seconds to wait before sending (0 when free)."""
        rate = self.rate
        if rate is not None:
            return rate.reserve(now)
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._previous = self._count if elapsed < 2.0 else -1
            self._window_start = now
            self._count = 0
        self._count += 1
        return 0.0

    def sent_rate(self, now: float) -> float:
        """Requests sent over about the last second (a sliding-window estimate)."""
        elapsed = now - self._window_start
        if not 0.0 <= elapsed < 2.0:
            return 0.0
        if elapsed >= 1.0:
            return self._count / elapsed
        if self._previous < 0:
            # The first window after a start or a pause: its count so far is not a
            # second's worth (a fraction of a second is, up to a quarter second).
            return self._count / max(elapsed, 0.25)
        return self._previous * (1.0 - elapsed) + self._count

    def on_success(self, now: float) -> None:
        """Count one answer that was not a throttle."""
        self.share.answered(now)
        if self.rate is not None:
            self.rate.on_success(now)
        if now >= self._test_at:
            self._test(now)

    def on_throttle(self, now: float, retry_after: float | None, sent_at: float | None) -> bool:
        """Count a 429/503; return whether the rate decreased."""
        share = self.share
        share.throttled(now)
        if now >= self._test_at:
            self._test(now)
        rate = self.rate
        if not share.signals(now, rate is not None) or now < self._test_end:
            if rate is not None:
                rate.pause(now, retry_after)
            return False
        started = rate is None
        if rate is None:
            if share.recent >= share.WALL:
                # The provider refuses (nearly) everything now: a limit was hit, and what
                # it accepted over the last second is about that limit. Not what was sent:
                # a batch's first turns are taken all at once (hundreds of creates queued
                # for a connection), far more than the provider has answered yet.
                accepted = share.answer_rate(now)
            else:
                # Scattered throttles (a limit just touched, or noise): what was sent (or
                # answered, if more: a pace dropped lately counts sends afresh), less the
                # share refused; a rate the provider may never have limited.
                sent = max(self.sent_rate(now), share.answer_rate(now, accepted=False))
                accepted = sent * (1.0 - share.share())
            start = accepted * self.DECREASE
            blind = start <= 0.0
            if blind:
                # It accepted nothing, which says nothing about its rate: half of what
                # was sent (or answered, if more: a pace dropped lately counts sends
                # afresh), and back up by doubling once requests are accepted again.
                start = 0.5 * max(self.sent_rate(now), share.answer_rate(now, accepted=False))
            start = max(start, 2.0)
            # Never below 5 % of it: a limit that keeps shrinking slows a batch down but
            # cannot stall it.
            limit = AIMDLimit(
                start,
                floor=max(1.0, 0.05 * start),
                decrease=self.DECREASE,
                blind=blind,
                slow_start=blind,
                probe=self.PROBE,
            )
            limit.throttles = 1
            limit.cool_down(now)  # this was the epoch's decrease
            self.rate = rate = AdaptiveRate(limit, burst=1.0, grain=self.GRAIN)
            rate.pause(now, retry_after)
            before = math.inf
        else:
            limit = rate.limit
            before = limit.value
            throttles = limit.throttles
            rate.on_throttle(now, retry_after, sent_at, share.answer_rate(now))
            if limit.throttles == throttles:
                return False
        limit.increase = max(1.0, 0.02 * limit.value)  # per second while it binds
        if share.share() < ThrottleShare.HEAVY:
            # The test starts once the pause is over: answers to requests sent after it.
            self._test_at = max(now, rate.paused_until) + self.SETTLE
            self._test_end = self._test_at + self.WINDOW
            self._test_snapshot = (-1, -1)
            self._test_share = share.share()
            self._test_before = before
            self._test_started = started
        return True

    def _test(self, now: float) -> None:
        """The next step of a decrease's test (see the class docstring)."""
        share = self.share
        answers, throttles = self._test_snapshot
        if answers < 0:  # the window opens
            self._test_snapshot = (share.answers, share.throttles)
            self._test_opened = self._test_at
            self._test_at = self._test_end
            return
        answers = share.answers - answers
        throttles = share.throttles - throttles
        # Enough answers that a share of throttles that went on unchanged shows (at least
        # 4 expected), unless that takes longer than ``LONGEST``.
        enough: float = self.TEST_ANSWERS
        if self._test_share > 0.0:
            enough = min(self.MOST_ANSWERS, max(enough, 4.0 / self._test_share))
        if answers < enough and now < self._test_opened + self.LONGEST:
            # Too few answers to tell yet (a slow rate, a loaded client): wait for more,
            # and decrease no further meanwhile.
            self._test_at = self._test_end = now + 0.25 * self.WINDOW
            return
        self._test_at = math.inf
        if answers < enough or throttles < self.HELPED * self._test_share * answers:
            return  # slowing down helped (or too few answers to tell): a limit
        share.is_noise(now, self._test_share, not self._test_started)
        if self._test_started:
            self.rate = None
        elif self.rate is not None:
            self.rate.limit.undo(self._test_before)


class CappedPace:
    """The shared `Pace` of a provider key under a user's fixed ceiling for one kind of
    request (``Limits.polls_per_second``): a slot is taken in both."""

    __slots__ = ("cap", "pace")

    def __init__(self, pace: Pace, cap: AdaptiveRate) -> None:
        self.pace = pace
        self.cap = cap

    @property
    def rate(self) -> AdaptiveRate | None:
        """The shared pace's discovered rate (``None``: not discovered)."""
        return self.pace.rate

    @property
    def share(self) -> ThrottleShare:
        return self.pace.share

    @property
    def value(self) -> float | None:
        """Requests of this kind per second allowed now."""
        shared = self.pace.value
        return self.cap.rate if shared is None else min(shared, self.cap.rate)

    def reserve(self, now: float) -> float:
        """Take a slot in the ceiling and in the shared pace; return the longer wait."""
        capped = self.cap.reserve(now)
        shared = self.pace.reserve(now)
        return capped if capped > shared else shared

    def on_success(self, now: float) -> None:
        self.pace.on_success(now)

    def on_throttle(self, now: float, retry_after: float | None, sent_at: float | None) -> bool:
        return self.pace.on_throttle(now, retry_after, sent_at)
