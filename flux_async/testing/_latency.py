"""Describe how long the fake's jobs take: fixed, uniform, normal, lognormal or shifting."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Latency", "LatencyLike", "as_latency", "parse_latency"]

Kind = Literal["fixed", "uniform", "normal", "lognormal", "shift", "custom"]


@dataclass(frozen=True, slots=True)
class Latency:
    """A seeded distribution of job latencies (seconds from create until ready).

    Build one with a class method; draws come from the fake's seeded RNG, so a seed
    fixes every value. Negative draws (a normal's left tail) become 0::

        FakeProvider(latency=Latency.lognormal(0.5, 0.8))           # long tail
        FakeProvider(latency=Latency.shift(0.05, (2, 4), after_jobs=100))  # slows down

    A plain number or a ``(low, high)`` tuple is accepted wherever a `Latency` is.
    """

    kind: Kind
    a: float = 0.0
    b: float = 0.0
    first: Latency | None = None
    then: Latency | None = None
    after_jobs: int = 0
    draw_with: Callable[[random.Random], float] | None = None

    @classmethod
    def fixed(cls, seconds: float) -> Latency:
        """Every job takes exactly ``seconds``."""
        _non_negative("seconds", seconds)
        return cls("fixed", float(seconds))

    @classmethod
    def uniform(cls, low: float, high: float) -> Latency:
        """Draw uniformly from ``[low, high]`` (what a ``(low, high)`` tuple means)."""
        if not 0 <= low <= high:
            raise ValueError(
                f"latency range must be (low, high) with 0 <= low <= high: {(low, high)}"
            )
        return cls("uniform", float(low), float(high))

    @classmethod
    def normal(cls, mean: float, sd: float) -> Latency:
        """Draw from a normal distribution; negative draws become 0."""
        _non_negative("mean", mean)
        _non_negative("sd", sd)
        return cls("normal", float(mean), float(sd))

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> Latency:
        """Draw from a lognormal distribution: most jobs near ``median``, a long slow tail.

        Args:
            median: The median latency in seconds (> 0).
            sigma: The standard deviation of the latency's logarithm; 1.0 puts about 1 job
                in 20 above 5x the median.
        """
        if not median > 0:
            raise ValueError(f"median must be > 0, got {median!r}")
        _non_negative("sigma", sigma)
        return cls("lognormal", float(median), float(sigma))

    @classmethod
    def shift(cls, first: LatencyLike, then: LatencyLike, *, after_jobs: int) -> Latency:
        """Use ``first`` for the first ``after_jobs`` jobs, then ``then`` (slows down mid-batch).

        Jobs are counted in creation order across all providers of one fake.
        """
        if after_jobs < 0:
            raise ValueError(f"after_jobs must be >= 0, got {after_jobs!r}")
        return cls("shift", first=as_latency(first), then=as_latency(then), after_jobs=after_jobs)

    @classmethod
    def custom(cls, draw: Callable[[random.Random], float]) -> Latency:
        """Draw with a function of the fake's seeded RNG."""
        if not callable(draw):
            raise TypeError(f"draw must be callable, got {draw!r}")
        return cls("custom", draw_with=draw)

    def draw(self, rng: random.Random, job_index: int) -> float:
        """Draw one job's latency.

        Args:
            rng: The fake's seeded RNG.
            job_index: The 0-based number of the job among every job the fake created.
        """
        match self.kind:
            case "fixed":
                value = self.a
            case "uniform":
                value = rng.uniform(self.a, self.b)
            case "normal":
                value = rng.gauss(self.a, self.b) if self.b else self.a
            case "lognormal":
                value = rng.lognormvariate(math.log(self.a), self.b) if self.b else self.a
            case "shift":
                part = self.first if job_index < self.after_jobs else self.then
                assert part is not None
                value = part.draw(rng, job_index)
            case "custom":
                assert self.draw_with is not None
                value = float(self.draw_with(rng))
        return max(0.0, value)


LatencyLike = float | tuple[float, float] | Latency | Callable[[random.Random], float]
"""What ``latency=`` and ``Faults(create_delay=)`` accept: seconds, ``(low, high)``, a
`Latency`, or a function drawing from the fake's seeded RNG."""


def as_latency(value: LatencyLike) -> Latency:
    """Turn seconds, a ``(low, high)`` range, a `Latency` or an RNG function into a `Latency`.

    Raises:
        ValueError: For a negative number or a malformed range.
        TypeError: For anything else.
    """
    if isinstance(value, Latency):
        return value
    if isinstance(value, bool):
        raise TypeError(f"latency must be seconds, (low, high) or a Latency, got {value!r}")
    if isinstance(value, (int, float)):
        return Latency.fixed(value)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"latency range must be (low, high) with 0 <= low <= high: {value}")
        return Latency.uniform(value[0], value[1])
    if callable(value):
        return Latency.custom(value)
    raise TypeError(f"latency must be seconds, (low, high), a Latency or a callable: {value!r}")


def parse_latency(text: str) -> Latency:
    """Parse the command-line form of a latency.

    ``SECONDS``, ``LOW,HIGH`` (uniform), ``uniform:LOW,HIGH``, ``normal:MEAN,SD`` or
    ``lognormal:MEDIAN,SIGMA``; a shift is built from two of these with
    `Latency.shift` (the command line's ``--latency-after N=SPEC``).

    Raises:
        ValueError: For any other text, with the accepted forms in the message.
    """
    kind, sep, rest = text.strip().partition(":")
    if not sep:
        kind, rest = "", kind
    try:
        numbers = [float(part) for part in rest.split(",")]
    except ValueError:
        numbers = []
    forms = {
        ("", 1): lambda: Latency.fixed(numbers[0]),
        ("", 2): lambda: Latency.uniform(numbers[0], numbers[1]),
        ("uniform", 2): lambda: Latency.uniform(numbers[0], numbers[1]),
        ("normal", 2): lambda: Latency.normal(numbers[0], numbers[1]),
        ("lognormal", 2): lambda: Latency.lognormal(numbers[0], numbers[1]),
    }
    build = forms.get((kind, len(numbers)))
    if build is None:
        raise ValueError(
            f"latency {text!r} is not SECONDS, LOW,HIGH, uniform:LOW,HIGH, normal:MEAN,SD "
            "or lognormal:MEDIAN,SIGMA"
        )
    return build()


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
