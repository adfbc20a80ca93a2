"""Policy objects (frozen; change them with `dataclasses.replace`) and environment reading.

This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from typing import Literal

from ._errors import ConfigurationError

__all__ = ["Limits", "PollPolicy", "RetryPolicy", "Timeouts", "Webhooks", "env_api_key"]


def _positive(owner: str, name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigurationError(f"{owner}.{name} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{owner}.{name} must be a finite number > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Ceilings on how hard one client may push its provider.

    Jobs in flight and connections are discovered (they grow while the provider answers
    and shrink on bursts of 503), and so is the provider's request rate: one rate per API
    key shared by creates and polls, unlimited until the provider refuses with 429, then
    paced smoothly just under what it accepted (a ``Retry-After`` pauses every request).
    The numbers here are only ceilings on that discovery (``polls_per_second`` and
    ``creates_per_second`` are fixed ceilings each kind of request keeps to on top of the
    shared rate); ``None`` (the default) means no ceiling but what the provider allows.

    Attributes:
        max_jobs_in_flight: jobs submitted and not yet finished; `submit` waits for a slot.
            Also the default ``concurrency`` of `FluxClient.generate_many` (1,000 when
            ``None``).
        max_connections: HTTP requests to the provider at once (creates and polls together).
        polls_per_second: the aggregate poll rate, however many jobs are outstanding.
        creates_per_second: the create rate.
        max_downloads: image downloads at once (separate from API requests).
        max_download_bytes: the largest image accepted; a bigger one is a `DownloadError`.
        max_upload_bytes: the largest local image (a path, bytes or a ``data:`` URL given
            as ``image_url``) sent inline or to the uploader; a bigger one is a
            `ValidationError`, raised before anything is sent.
    """

    max_jobs_in_flight: int | None = None
    max_connections: int | None = None
    polls_per_second: float | None = None
    creates_per_second: float | None = None
    max_downloads: int = 8
    max_download_bytes: int = 50 * 1024 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        _positive("Limits", "max_jobs_in_flight", self.max_jobs_in_flight, allow_none=True)
        _positive("Limits", "max_connections", self.max_connections, allow_none=True)
        _positive("Limits", "polls_per_second", self.polls_per_second, allow_none=True)
        _positive("Limits", "creates_per_second", self.creates_per_second, allow_none=True)
        _positive("Limits", "max_downloads", self.max_downloads)
        _positive("Limits", "max_download_bytes", self.max_download_bytes)
        _positive("Limits", "max_upload_bytes", self.max_upload_bytes)


_FIXED_FIELDS = ("wait_first", "wait_initial", "wait_exp_base")


@dataclasses.dataclass(frozen=True)
class PollPolicy:
    """When each job is polled, and its deadline.

    By default the schedule is learned: per provider and model the client keeps an
    estimate of how long jobs take (the provider's typical latency until jobs finish) and
    polls each job where it has likely just finished, so fast jobs are found within about
    an eighth of their latency (at least 0.1 s) and slow ones cost few requests. Nothing
    needs tuning.

    A fixed schedule is used when ``schedule="fixed"`` or when any of ``wait_first``,
    ``wait_initial`` or ``wait_exp_base`` is set: the first check after ``wait_first``
    (default: the provider's typical latency), later ones ``wait_initial * wait_exp_base
    ** n`` seconds apart (defaults 0.5 and 2.0). `PollPolicy.fixed` builds a constant
    cadence. ``wait_max`` caps every wait in both schedules; ``wait_jitter`` spreads polls
    (full jitter in a fixed schedule; in the learned one, waits are shortened by up to
    10 %, never lengthened). ``timeout`` is each job's deadline, counted from its
    submission: the job then ends ``timed_out`` and is never polled again.
    """

    wait_first: float | None = None
    wait_initial: float | None = None
    wait_max: float = 15.0
    wait_exp_base: float | None = None
    wait_jitter: bool = True
    timeout: float = 600.0
    schedule: Literal["learned", "fixed"] | None = None

    def __post_init__(self) -> None:
        _positive("PollPolicy", "wait_first", self.wait_first, allow_none=True)
        _positive("PollPolicy", "wait_initial", self.wait_initial, allow_none=True)
        _positive("PollPolicy", "wait_max", self.wait_max)
        _positive("PollPolicy", "timeout", self.timeout)
        if self.wait_exp_base is not None and not (
            isinstance(self.wait_exp_base, (int, float)) and self.wait_exp_base >= 1
        ):
            raise ConfigurationError(
                f"PollPolicy.wait_exp_base must be >= 1, got {self.wait_exp_base!r}"
            )
        if self.schedule not in (None, "learned", "fixed"):
            raise ConfigurationError(
                f"PollPolicy.schedule must be 'learned' or 'fixed', got {self.schedule!r}"
            )
        if self.schedule == "learned" and self.is_fixed_set():
            raise ConfigurationError(
                "PollPolicy(schedule='learned') takes no wait_first, wait_initial or "
                "wait_exp_base (those define a fixed schedule)"
            )

    @classmethod
    def fixed(
        cls,
        interval: float,
        *,
        first: float | None = None,
        timeout: float = 600.0,
        jitter: bool = False,
    ) -> PollPolicy:
        """A constant cadence: the first check after ``first`` (default ``interval``), then
        one every ``interval`` seconds, as a hand-written poll loop does."""
        return cls(
            wait_first=interval if first is None else first,
            wait_initial=interval,
            wait_exp_base=1.0,
            wait_max=interval,
            wait_jitter=jitter,
            timeout=timeout,
            schedule="fixed",
        )

    def is_fixed_set(self) -> bool:
        return any(getattr(self, name) is not None for name in _FIXED_FIELDS)

    @property
    def learned(self) -> bool:
        """Whether the schedule is learned (the default) rather than fixed."""
        if self.schedule is not None:
            return self.schedule == "learned"
        return not self.is_fixed_set()

    @property
    def backoff(self) -> tuple[float, float, float]:
        """The fixed schedule's ``(wait_initial, wait_exp_base, wait_max)``, defaults filled."""
        initial = 0.5 if self.wait_initial is None else self.wait_initial
        base = 2.0 if self.wait_exp_base is None else self.wait_exp_base
        return initial, base, self.wait_max


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried.

    A create is resent only when it provably did no work (never sent, or refused with
    429/503). Queries are retried freely. All retries draw on one budget per client:
    ``budget_ratio`` retries are earned per successful request, on top of a reserve of
    ``budget_reserve``, so an outage does not turn into a retry storm. Retries the provider
    paced itself with ``Retry-After`` (which pause every create) do not draw on the budget;
    ``attempts`` still bounds them.

    Attributes:
        attempts: tries per request, the first included.
        wait_initial, wait_max, wait_exp_base: exponential backoff between tries (full jitter).
        retry_after_max: the longest ``Retry-After`` honoured; longer asks give up.
        budget_ratio, budget_reserve: the shared retry budget (see above).
    """

    attempts: int = 6
    wait_initial: float = 0.25
    wait_max: float = 20.0
    wait_exp_base: float = 2.0
    retry_after_max: float = 60.0
    budget_ratio: float = 0.2
    budget_reserve: float = 20.0

    def __post_init__(self) -> None:
        _positive("RetryPolicy", "attempts", self.attempts)
        _positive("RetryPolicy", "wait_initial", self.wait_initial)
        _positive("RetryPolicy", "wait_max", self.wait_max)
        _positive("RetryPolicy", "retry_after_max", self.retry_after_max)
        if not self.wait_exp_base >= 1:
            raise ConfigurationError(
                f"RetryPolicy.wait_exp_base must be >= 1, got {self.wait_exp_base!r}"
            )
        if self.budget_ratio < 0 or self.budget_reserve < 0:
            raise ConfigurationError("RetryPolicy budget_ratio and budget_reserve must be >= 0")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Network timeouts, in seconds.

    There is deliberately no total timeout on a create: it would count time spent waiting
    for a pooled connection and hide whether the request was sent, turning a harmless delay
    into a job of unknown fate. A job's overall deadline is `PollPolicy.timeout`.

    Attributes:
        connect: establishing a TCP/TLS connection (a failure here is safe to retry).
        pool: waiting for a free connection from the pool (also safe to retry).
        read: waiting for response bytes of a create or query once the request was sent.
        read_sync: the same for providers that answer only when the image is ready.
        close_grace: how long `FluxClient.aclose` lets creates already sent get their
            answer (so a job the provider created and charged is known by its id) before
            it cancels them; ``0`` cancels at once.
    """

    connect: float = 10.0
    pool: float = 60.0
    read: float = 60.0
    read_sync: float = 300.0
    close_grace: float = 5.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "close_grace" and value == 0 and not isinstance(value, bool):
                continue
            _positive("Timeouts", field.name, value)


@dataclasses.dataclass(frozen=True)
class Webhooks:
    """Receive provider callbacks instead of polling (ShortAPI and PiAPI).

    Each job gets its own address ``{public_url}/{provider}/{local_id}/{token}`` with a
    256-bit random token (only its hash is kept); PiAPI jobs also get a random
    ``x-webhook-secret``. A callback is a hint: by default a terminal one triggers one
    authenticated query, and the final state and image URLs come from that answer. Polling
    goes on as a slow safety net for callbacks that never come.

    Attributes:
        public_url: the address the provider calls, up to and including the path prefix
            as the outside world sees it (e.g. ``https://example.com/flux-webhooks``).
            ``None``: the bundled receiver's own ``http://host:port{path_prefix}``, which
            only a provider on the same machine or network can reach (tests, tunnels).
        host, port: where the bundled receiver listens (port 0: any free port).
        path_prefix: the path the receiver serves under.
        serve: run the bundled receiver; ``False`` when you mount the routes in your own
            aiohttp app (`FluxClient.webhook_app`) or call `FluxClient.handle_webhook`.
        max_body_bytes: larger callback bodies are refused with 413.
        trust_payload: take the final state and image URLs from the callback itself, saving
            the verifying query (one request per job). The sender is authenticated by the
            job's 256-bit URL token, which only the provider was told (and for PiAPI by its
            ``x-webhook-secret`` too). A payload whose image URLs are not http(s) URLs on a
            trusted result host is still verified with one query.
        result_hosts: the hosts a trusted payload's image URLs may name (an entry starting
            with ``.`` also admits its subdomains). ``None``: the provider's known result
            hosts plus its API host (PiAPI), or any http(s) host where none are known
            (ShortAPI documents none).
        read_timeout: seconds to receive a callback's body; a body slower than that (or
            shorter than its ``Content-Length``) is answered 408 and the connection closed.
        backlog: the bundled receiver's listen backlog (pending connections the OS queues),
            sized for thousands of jobs in flight whose callbacks arrive in a burst.
        grace: seconds after submission before the first safety-net poll (default: four
            times the provider's typical latency, at least 60 s).
        orphan_window: how long a create that may have been lost waits for its callback
            to prove the job exists, before it ends ``unknown``.
        remember_finished: how many finished jobs still answer late callbacks with 200.
    """

    public_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    path_prefix: str = "/flux-webhooks"
    serve: bool = True
    max_body_bytes: int = 256 * 1024
    trust_payload: bool = False
    result_hosts: tuple[str, ...] | None = None
    read_timeout: float = 5.0
    backlog: int = 4096
    grace: float | None = None
    orphan_window: float = 120.0
    remember_finished: int = 10_000

    def __post_init__(self) -> None:
        if self.public_url is not None:
            parsed = urllib.parse.urlsplit(self.public_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigurationError(
                    f"Webhooks.public_url must be an http(s) URL, got {self.public_url!r}"
                )
        if not self.path_prefix.startswith("/") or "{" in self.path_prefix:
            raise ConfigurationError(
                f"Webhooks.path_prefix must start with '/', got {self.path_prefix!r}"
            )
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise ConfigurationError(f"Webhooks.port must be 0-65535, got {self.port!r}")
        _positive("Webhooks", "max_body_bytes", self.max_body_bytes)
        _positive("Webhooks", "read_timeout", self.read_timeout)
        if not (
            isinstance(self.backlog, int)
            and not isinstance(self.backlog, bool)
            and 1 <= self.backlog <= 65535
        ):
            raise ConfigurationError(f"Webhooks.backlog must be 1-65535, got {self.backlog!r}")
        if not isinstance(self.trust_payload, bool):
            raise ConfigurationError(
                f"Webhooks.trust_payload must be True or False, got {self.trust_payload!r}"
            )
        if self.result_hosts is not None:
            if isinstance(self.result_hosts, str) or not isinstance(self.result_hosts, tuple):
                raise ConfigurationError(
                    "Webhooks.result_hosts must be a tuple of host names, e.g. "
                    f"('img.example.com',), got {self.result_hosts!r}"
                )
            for host in self.result_hosts:
                if not (isinstance(host, str) and self._bare_host(host)):
                    raise ConfigurationError(
                        "Webhooks.result_hosts entries must be bare host names (no scheme, "
                        f"port or path), got {host!r}"
                    )
        _positive("Webhooks", "grace", self.grace, allow_none=True)
        _positive("Webhooks", "orphan_window", self.orphan_window)
        _positive("Webhooks", "remember_finished", self.remember_finished)

    @property
    def prefix(self) -> str:
        """The path prefix without a trailing slash."""
        return self.path_prefix.rstrip("/")

    @staticmethod
    def _bare_host(host: str) -> bool:
        """Whether ``host`` is a host name (``.example.com`` allowed), with no port or path."""
        name = host[1:] if host.startswith(".") else host
        if not name or len(name) > 253 or any(c in name for c in "/?#@:\\ %") or ".." in name:
            return False
        try:
            return urllib.parse.urlsplit("//" + name).hostname == name.lower()
        except ValueError:
            return False


def env_api_key(variable: str) -> str | None:
    """Return the API key from environment variable ``variable``, or ``None``."""
    value = os.environ.get(variable, "").strip()
    return value or None
