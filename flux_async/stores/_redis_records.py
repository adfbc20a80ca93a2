"""A `JobRecord` in Redis: written as a hash (``{ns}:job:{local_id}``, see
`flux_async.stores.redis`), decoded back, and `RedisStore`'s reads (`RecordReads`).

Every field is text: numbers as their ``str`` (floats as their ``repr``), JSON for the request,
images and files, hex for the digests; an absent optional field is left out of the hash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from .._models import Image, JobStatus
from .._store import JobRecord, JournalError, check_input
from ._redis_writes import NO_INDEX, SCORE_INDEX, op, text

if TYPE_CHECKING:
    import redis.asyncio as aioredis

encode = msgspec.json.encode
_decode_images = msgspec.json.Decoder(tuple[Image, ...]).decode
_decode_files = msgspec.json.Decoder(tuple[str, ...]).decode
_decode_request = msgspec.json.Decoder(dict[str, Any]).decode


def alloc_op(record: JobRecord, owner: str) -> tuple[str | bytes, ...]:
    """The ``alloc`` operation storing a new ``record`` owned by the replica ``owner``."""
    status = record.status
    fields: dict[str, str | bytes] = {
        "local_id": record.local_id,
        "attempt": str(record.attempt),
        "fingerprint": record.fingerprint,
        "provider": record.provider,
        "model": record.model,
        "request": encode(record.request),
        "status": status.value,
        "rank": str(status.rank),
        "refunded": "1" if record.refunded else "0",
        "images": encode(record.images),
        "polls": str(record.polls),
        "files": encode(record.files),
        "created_at": repr(float(record.created_at)),
        "owner": owner,
    }
    optional = {
        "batch_id": record.batch_id,
        "index": record.index,
        "token_hash": record.token_hash.hex() if record.token_hash is not None else None,
        "secret_hash": record.secret_hash.hex() if record.secret_hash is not None else None,
        "job_id": record.job_id,
        "cost": record.cost,
        "seed": record.seed,
        "error_kind": record.error_kind,
        "error_message": record.error_message,
        "accepted_at": record.accepted_at,
        "finished_at": record.finished_at,
    }
    for name, value in optional.items():
        if value is not None:
            fields[name] = text(value)
    index = record.index if record.index is not None else NO_INDEX
    pairs = [item for pair in fields.items() for item in pair]
    return op(
        "alloc",
        record.local_id,
        record.fingerprint,
        fields["created_at"],
        text(fields.get("token_hash")),
        record.provider,
        text(record.job_id),
        text(record.batch_id),
        str(index * SCORE_INDEX + record.attempt),
        owner,
        "0" if status.is_terminal else "1",
        *pairs,
    )


def decode(fields: Mapping[bytes, bytes] | None) -> JobRecord | None:
    """The record a hash holds (None for an empty or missing hash)."""
    if not fields:
        return None
    text = {key.decode(): value for key, value in fields.items()}

    def get(name: str) -> str | None:
        value = text.get(name)
        return value.decode() if value is not None else None

    def number(name: str) -> float | None:
        value = get(name)
        return float(value) if value is not None else None

    index, seed, cost = get("index"), get("seed"), get("cost")
    token_hash, secret_hash = get("token_hash"), get("secret_hash")
    return JobRecord(
        local_id=text["local_id"].decode(),
        batch_id=get("batch_id"),
        index=int(index) if index is not None else None,
        attempt=int(text["attempt"]),
        fingerprint=text["fingerprint"].decode(),
        provider=text["provider"].decode(),
        model=text["model"].decode(),
        request=_decode_request(text["request"]),
        token_hash=bytes.fromhex(token_hash) if token_hash is not None else None,
        secret_hash=bytes.fromhex(secret_hash) if secret_hash is not None else None,
        job_id=get("job_id"),
        status=JobStatus(text["status"].decode()),
        cost=Decimal(cost) if cost is not None else None,
        refunded=text.get("refunded") == b"1",
        images=_decode_images(text.get("images", b"[]")),
        seed=int(seed) if seed is not None else None,
        polls=int(text.get("polls", b"0")),
        files=_decode_files(text.get("files", b"[]")),
        error_kind=get("error_kind"),
        error_message=get("error_message"),
        created_at=float(text["created_at"]),
        accepted_at=number("accepted_at"),
        finished_at=number("finished_at"),
    )


class RecordReads:
    """`RedisStore`'s reads of records (a mixin: the connection is the store's). Each read
    first waits for the writes queued before it (`flush`), so it sees them."""

    replica: str
    _where: str

    if TYPE_CHECKING:

        @property
        def redis(self) -> aioredis.Redis:
            """The redis-py client."""

        def key(self, *parts: str) -> str:
            """The store's key for ``parts``."""

        async def flush(self) -> None:
            """Wait for the writes queued so far."""

        async def _retrying(self, call: Callable[..., Any], *args: Any) -> Any:
            """Run ``call``, retried while Redis is away."""

        async def _read(self, call: Callable[..., Any], *args: Any) -> Any:
            """`_retrying` for a read."""

    async def find(self, local_id: str) -> JobRecord | None:
        """Return the record with this local id."""
        await self.flush()
        return await self._load(local_id)

    async def find_job(self, provider: str, job_id: str) -> JobRecord | None:
        """Return the record of the job ``provider`` knows as ``job_id``."""
        await self.flush()
        local_id = await self._read(self.redis.get, self.key("jobid", provider, job_id))
        return await self._load(local_id.decode()) if local_id is not None else None

    async def find_by_token_hash(self, token_hash: bytes) -> JobRecord | None:
        """Return the record whose callback token has this SHA-256 digest."""
        await self.flush()
        local_id = await self._read(self.redis.get, self.key("token", token_hash.hex()))
        return await self._load(local_id.decode()) if local_id is not None else None

    async def records(self, batch_id: str) -> list[JobRecord]:
        """Return a batch's records by input index, then attempt (superseded ones too)."""
        await self.flush()
        local_ids = await self._read(self.redis.zrange, self.key("batch", batch_id), 0, -1)
        return await self._load_many([value.decode() for value in local_ids])

    async def check_inputs(self, batch_id: str, index: int, fingerprint: str) -> JobRecord | None:
        """Return the latest record of input ``index`` if it holds the same request.

        Raises:
            JournalMismatchError: the store holds another request at ``index``.
        """
        await self.flush()
        low = index * SCORE_INDEX
        local_ids = await self._read(
            self.redis.zrangebyscore, self.key("batch", batch_id), low, low + SCORE_INDEX - 1
        )
        held = await self._load_many([value.decode() for value in local_ids])
        prior = held[-1] if held else None
        try:
            return check_input(prior, batch_id, index, fingerprint)
        except JournalError as exc:
            exc.path = self._where
            raise

    async def load_meta(self, key: str) -> bytes | None:
        """Return the value saved under ``key``."""
        await self.flush()
        value: bytes | None = await self._read(self.redis.get, self.key("meta", key))
        return value

    async def owned(self, replica: str | None = None) -> list[str]:
        """Return the local ids of the jobs ``replica`` (default this one) owns, not ended."""
        await self.flush()
        held = await self._read(self.redis.smembers, self.key("owner", replica or self.replica))
        return sorted(value.decode() for value in held)

    async def _load(self, local_id: str) -> JobRecord | None:
        return decode(await self._read(self.redis.hgetall, self.key("job", local_id)))

    async def _load_many(self, local_ids: list[str]) -> list[JobRecord]:
        if not local_ids:
            return []

        async def fetch() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for local_id in local_ids:
                    pipe.hgetall(self.key("job", local_id))
                return list(await pipe.execute())

        found = [decode(fields) for fields in await self._retrying(fetch)]
        return [record for record in found if record is not None]
