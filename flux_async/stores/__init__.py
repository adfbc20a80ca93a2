"""Job stores: where job records live beyond the process.

- `MemoryStore`: the default; nothing survives the process.
- `SQLiteJournal`: a SQLite file on one machine; a batch run with it can be killed and
  resumed without paying twice.

Each satisfies the `JobStore` protocol, which a store of your own may implement too.
"""

from __future__ import annotations

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

__all__ = [
    "JobRecord",
    "JobStore",
    "JournalError",
    "JournalMismatchError",
    "MemoryStore",
    "SQLiteJournal",
    "check_input",
    "fingerprint",
]
