"""`Replica`: a client's membership among the replicas sharing a `RedisStore`.

- **Restart.** On joining, the jobs this replica owned and had not seen end are re-attached
  by their provider id; a create that was in flight is recovered like a journal's.
- **Callbacks for other replicas' jobs.** A callback the local router does not know is checked
  against the job's token and secret digests in Redis, decoded, and added to the owner's inbox
  stream (``{ns}:inbox:{replica}``, the decoded update only: a body may echo the secret).
- **This replica's inbox.** A task reads the inbox through the consumer group ``owner``
  (first what an earlier run read and never acknowledged), hands each update to the router,
  then acknowledges and deletes the entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from redis.exceptions import RedisError, ResponseError

from .._callbacks import (
    BAD_BODY,
    NOT_FOUND,
    TOO_LARGE,
    WebhookResponse,
    digest,
    header_value,
    log_hostile,
    parse_callback_path,
    same_digest,
)
from .._config import Webhooks
from .._errors import FluxError, UnknownStatusError
from .._models import JobStatus
from .._store import JobStore
from ..providers._base import CallbackUpdate, Provider, Update
from ._redis_conn import StoreUnavailableError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .._callbacks import CallbackRouter
    from .._create import CreateLane

logger = logging.getLogger("flux_async.stores.redis")

_INBOX_MAXLEN = 100_000
_GROUP = "owner"
_OK = WebhookResponse(200, b"ok\n")
_FINISHED = WebhookResponse(200, b"already finished\n")
_SECRET = WebhookResponse(401, b"missing or wrong webhook secret\n")
_UNAVAILABLE = WebhookResponse(503, b"job store unavailable; retry later\n")
#: KEYS[1] = the owner's inbox; ARGV = its length cap, the TTL, then the entry's fields l, j, u.
#: Adds the entry and renews the inbox's expiry in one round trip.
_FORWARD = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'l', ARGV[3], 'j', ARGV[4], 'u', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
#: KEYS[1] = an inbox; ARGV = the group, entry ids: acknowledges and deletes the entries, in
#: one command (a MULTI pipeline cancelled mid-way could leave the task's cancellation lost).
_ACK = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""
_encode = msgspec.json.encode
_decode_update = msgspec.json.Decoder(Update).decode


class SharedStore(JobStore, Protocol):
    """What a `Replica` uses of its `RedisStore` (which imports this module)."""

    replica: str
    ttl: int
    _joined: bool

    @property
    def redis(self) -> aioredis.Redis:
        """The redis-py client."""

    def key(self, *parts: str) -> str:
        """The store's key for ``parts``."""

    async def owned(self, replica: str | None = None) -> list[str]:
        """The local ids of the replica's jobs not ended."""

    def release(self, local_id: str) -> None:
        """This replica no longer awaits the job."""

    async def _read(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run a read, retried while Redis is away."""


class Replica:
    """A client's membership among the replicas sharing a `RedisStore` (see `join`)."""

    def __init__(
        self,
        store: SharedStore,
        provider: Provider,
        creates: CreateLane,
        router: CallbackRouter | None,
        webhooks: Webhooks | None,
    ) -> None:
        self.store = store
        self.provider = provider
        self._creates = creates
        self._router = router
        self._max_body = webhooks.max_body_bytes if webhooks is not None else 256 * 1024
        self._task: asyncio.Task[None] | None = None
        self.reattached: list[str] = []
        """Local ids re-attached when the client opened (jobs this replica owned)."""
        self.forwarded = 0
        """Callbacks this replica accepted for other replicas' jobs."""
        self.delivered = 0
        """Callbacks from the inbox applied to this replica's jobs."""

    async def start(self) -> None:
        await self._reattach()
        if self._router is not None:
            self._task = asyncio.get_running_loop().create_task(
                self._consume(), name=f"flux_async redis inbox {self.store.replica}"
            )

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.store._joined = False

    # Restart: the jobs this replica owned ------------------------------------------------

    async def _reattach(self) -> None:
        store = self.store
        for local_id in await store.owned():
            record = await store.find(local_id)
            if record is None or record.status.is_terminal:
                store.release(local_id)
                continue
            if record.provider != self.provider.name:
                continue
            if record.job_id is not None:
                await self._creates.reattach(record, store)
            else:
                await self._creates.recover(
                    record,
                    store,
                    wait_callback=True,
                    evidence="the replica restarted while the job's create was in flight",
                )
            self.reattached.append(local_id)
        if self.reattached:
            logger.info("replica %s: re-attached %d open jobs", store.replica, len(self.reattached))

    # Callbacks for other replicas' jobs --------------------------------------------------

    async def handle_webhook(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        """Route a callback the local router does not know to the job's owner.

        Same answers as `FluxClient.handle_webhook`, plus 503 when Redis is unreachable
        (the provider's retry, or the owner's safety-net poll, then finds the job).
        """
        try:
            return await self._route(path, headers, body)
        except StoreUnavailableError:
            return _UNAVAILABLE
        except Exception as exc:  # hostile input must never become a 500
            log_hostile("callback rejected: %s", type(exc).__name__)
            return NOT_FOUND

    async def _route(self, path: str, headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        parsed = parse_callback_path(path)
        if parsed is None:
            return NOT_FOUND
        provider_name, local_id, token = parsed
        if provider_name != self.provider.name:
            return NOT_FOUND
        store = self.store
        redis = store.redis
        held = await store._read(redis.get, store.key("token", digest(token).hex()))
        if held is None or held.decode() != local_id:
            return NOT_FOUND
        token_hash, secret_hash, owner, rank, job_id = await store._read(
            redis.hmget,
            store.key("job", local_id),
            ["token_hash", "secret_hash", "owner", "rank", "job_id"],
        )
        if token_hash is None or owner is None or rank is None:
            return NOT_FOUND
        if not same_digest(token, bytes.fromhex(token_hash.decode())):
            return NOT_FOUND
        if not isinstance(body, (bytes, bytearray)) or len(body) > self._max_body:
            return TOO_LARGE
        secret_header = self.provider.callback_secret_header
        if secret_header is not None:
            presented = header_value(headers, secret_header)
            stored = bytes.fromhex(secret_hash.decode()) if secret_hash is not None else None
            if presented is None or not same_digest(presented, stored):
                return _SECRET
        if int(rank) >= JobStatus.SUCCEEDED.rank:
            return _FINISHED
        update = b""
        callback_job_id = b""
        try:
            callback = self.provider.parse_callback(bytes(body))
        except UnknownStatusError:
            pass  # news all the same: the owner checks the job
        except (ValueError, msgspec.MsgspecError, FluxError, RecursionError) as exc:
            log_hostile("job %s: unreadable callback: %s", local_id, type(exc).__name__)
            return BAD_BODY
        else:
            if callback.job_id is not None and job_id is not None:
                if callback.job_id != job_id.decode():
                    return WebhookResponse(409, b"callback names another job\n")
            # The decoded update only: a body may echo the secret, and is not stored.
            update = _encode(callback.update)
            callback_job_id = (callback.job_id or "").encode()
        await store._read(
            redis.eval,
            _FORWARD,
            1,
            store.key("inbox", owner.decode()),
            _INBOX_MAXLEN,
            store.ttl,
            local_id.encode(),
            callback_job_id,
            update,
        )
        self.forwarded += 1
        return (
            _OK
            if update
            else WebhookResponse(422, b"unrecognised status; the job will be checked\n")
        )

    # This replica's inbox ---------------------------------------------------------------

    async def _consume(self) -> None:
        store = self.store
        redis: Any = store.redis  # stream replies are loosely typed in redis-py
        inbox = store.key("inbox", store.replica)
        consumer = f"{store.replica}-{os.getpid()}"
        cursor = "0"  # first what was delivered to an earlier run and never acknowledged
        delay = 0.05
        while True:
            try:
                if cursor == "0":
                    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                        await redis.xgroup_create(inbox, _GROUP, id="0", mkstream=True)
                replies = await redis.xreadgroup(
                    _GROUP,
                    consumer,
                    {inbox: cursor},
                    count=500,
                    block=None if cursor == "0" else 1000,
                )
                entries = replies[0][1] if replies else []
                if cursor == "0":
                    # Pending entries of every earlier consumer of this replica too.
                    entries = await self._claim_stale(inbox, consumer) + list(entries)
                    if not entries:
                        cursor = ">"
                        continue
                ids = []
                for entry_id, fields in entries:
                    if fields:
                        self._deliver(fields)
                    ids.append(entry_id)
                if ids:
                    for start in range(0, len(ids), 500):  # read and applied: nothing keeps it
                        await redis.eval(_ACK, 1, inbox, _GROUP, *ids[start : start + 500])
                    if cursor == "0":
                        cursor = ">"
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the stream: recreate it
                    cursor = "0"
                    continue
                logger.warning("replica %s: inbox read failed: %s", store.replica, exc)
                await asyncio.sleep(1.0)
            except (RedisError, OSError) as exc:
                logger.info(
                    "replica %s: inbox unavailable (%s); retrying",
                    store.replica,
                    type(exc).__name__,
                )
                cursor = "0"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _claim_stale(self, inbox: str, consumer: str) -> list[Any]:
        """Take over entries an earlier run of this replica read but never acknowledged."""
        redis: Any = self.store.redis
        claimed: list[Any] = []
        start = "0-0"
        while True:
            reply = await redis.xautoclaim(inbox, _GROUP, consumer, 0, start, count=500)
            start, entries = reply[0], reply[1]
            claimed.extend(entries)
            if start in (b"0-0", "0-0") or not entries:
                return claimed

    def _deliver(self, fields: Mapping[bytes, bytes]) -> None:
        router = self._router
        assert router is not None
        try:
            local_id = fields[b"l"].decode()
            job_id = fields.get(b"j", b"").decode() or None
            raw = fields.get(b"u", b"")
            callback = CallbackUpdate(job_id=job_id, update=_decode_update(raw)) if raw else None
        except (KeyError, ValueError, msgspec.MsgspecError) as exc:
            log_hostile("inbox entry unreadable: %s", type(exc).__name__)
            return
        if router.deliver(local_id, callback):
            self.delivered += 1
