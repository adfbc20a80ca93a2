"""Job stores: where job records live beyond the process.

- `MemoryStore`: the default; nothing survives the process.
- `SQLiteJournal`: a SQLite file on one machine; a batch run with it can be killed and
  resumed without paying twice.
- `RedisStore` (extra ``flux-async[redis]``): Redis, shared by many processes; replicas of a
  web app route each other's callbacks and re-attach their jobs after a restart.

Each satisfies the `JobStore` protocol, which a store of your own may implement too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._store import (
    JobRecord,
    JobStore,
    JournalError,
    JournalMismatchError,
    MemoryStore,
    check_input,
    fingerprint,
)
from .sqlite import SQLiteJournal

if TYPE_CHECKING:
    from .redis import RedisStore, StoreUnavailableError

__all__ = [
    "JobRecord",
    "JobStore",
    "JournalError",
    "JournalMismatchError",
    "MemoryStore",
    "RedisStore",
    "SQLiteJournal",
    "StoreUnavailableError",
    "check_input",
    "fingerprint",
]


def __getattr__(name: str) -> Any:
    # redis-py is an optional extra: imported only when a Redis name is asked for.
    if name in ("RedisStore", "StoreUnavailableError"):
        from . import redis

        return getattr(redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
