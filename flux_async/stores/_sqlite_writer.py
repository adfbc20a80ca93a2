"""`GroupWriter`: the SQLite journal's writes, grouped into few transactions on one thread.

The event loop only appends writes to lists, one per kind of statement. Awaited writes
(`wait`) and prompt events (acceptances) go at the end of the tick they were made in; other
events (`queue`) wait up to `EVENT_DELAY` seconds for company, or go with the next write,
whichever comes first. Everything pending then is written in **one** transaction, each kind
with one ``executemany``, in the fixed order of `ORDER`; whatever is queued while a
transaction is being written goes in the next one. A transaction that holds a ``durable``
write is committed with ``synchronous=FULL``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._store import JournalError
from ._sqlite_schema import INSERT, ORDER

__all__ = ["EVENT_DELAY", "GroupWriter"]

EVENT_DELAY = 0.02
"""Seconds an event (a job's end, its saved files) may wait for others to share its
transaction when no other write is pending."""

Ops = list[tuple[str, list[tuple[Any, ...]]]]


class GroupWriter:
    """Writes a journal's statements in grouped transactions.

    Args:
        loop: the event loop the writes are queued from.
        executor: the journal's one writer thread.
        conn: the journal's connection (used on that thread only).
        name: the journal's path, for error messages.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
        conn: sqlite3.Connection,
        name: str,
    ) -> None:
        self._loop = loop
        self._executor = executor
        self._conn = conn
        self._name = name
        # Statement -> parameters queued, in the order they came.
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._insert_waiters: list[asyncio.Future[None]] = []  # one per INSERT
        self._durable = False
        self._soon = False  # a write starts at the end of this tick
        self._prompt = False  # a prompt event is pending: it goes as soon as it can
        self._timer: asyncio.TimerHandle | None = None  # ... or when this fires
        self._writing = False
        self.failure: JournalError | None = None
        """The error of a failed transaction: every later write raises it."""
        self.transactions = 0
        """Write transactions committed so far."""
        self.durable_transactions = 0
        """Of those, the ones synced to disk before returning."""

    @property
    def writing(self) -> bool:
        """Whether a transaction is being written now."""
        return self._writing

    def add(self, sql: str, params: tuple[Any, ...]) -> None:
        """Add a write to the next transaction without scheduling one (dropped once failed)."""
        if self.failure is None:
            self._pending.setdefault(sql, []).append(params)

    def queue(self, sql: str, params: tuple[Any, ...], *, prompt: bool = False) -> None:
        """Queue an event: written within `EVENT_DELAY` seconds, or with an earlier write;
        a ``prompt`` one at the end of this tick, like an awaited write."""
        if self.failure is not None:
            return  # already broken: the next awaited call raises
        self._pending.setdefault(sql, []).append(params)
        if prompt:
            self._prompt = True
            if not (self._writing or self._soon):
                self._soon = True
                self._loop.call_soon(self._start_write)
        elif not (self._writing or self._soon or self._timer is not None):
            self._timer = self._loop.call_later(EVENT_DELAY, self._start_write)

    async def wait(self, sql: str | None, params: tuple[Any, ...], durable: bool = False) -> None:
        """Queue a write (or nothing: ``sql`` None) and return once it is committed.

        Raises:
            JournalError: this write, or an earlier one, failed (an `INSERT` refused alone:
                a duplicate local id).
        """
        if self.failure is not None:
            raise self.failure
        waiter: asyncio.Future[None] = self._loop.create_future()
        if sql is not None:
            self._pending.setdefault(sql, []).append(params)
            if sql == INSERT:
                self._insert_waiters.append(waiter)
        self._waiters.append(waiter)
        self._durable = self._durable or durable
        if not (self._writing or self._soon):
            self._soon = True
            # Runs after every callback already ready: the whole tick's writes go together.
            self._loop.call_soon(self._start_write)
        await waiter

    async def flush(self) -> None:
        """Return once every write queued so far is committed."""
        if not self._pending and not self._writing:
            if self.failure is not None:
                raise self.failure
            return  # everything queued has been committed
        await self.wait(None, ())

    def _start_write(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing or not (self._pending or self._waiters):
            return
        pending, self._pending = self._pending, {}
        waiters, self._waiters = self._waiters, []
        inserts, self._insert_waiters = self._insert_waiters, []
        durable, self._durable = self._durable, False
        self._prompt = False
        # Statements of every kind (missing from ORDER: none) in their fixed order.
        ops = [(sql, pending[sql]) for sql in sorted(pending, key=ORDER.__getitem__)]
        self._writing = True
        future = self._loop.run_in_executor(self._executor, self._write_sync, ops, durable)
        future.add_done_callback(
            lambda done: self._written(done, bool(ops), durable, waiters, inserts)
        )

    def _written(
        self,
        done: asyncio.Future[list[int]],
        wrote: bool,
        durable: bool,
        waiters: list[asyncio.Future[None]],
        inserts: list[asyncio.Future[None]],
    ) -> None:
        self._writing = False
        error = done.exception()
        if error is not None:
            self.failure = JournalError(
                f"cannot write the journal {self._name}: {error}", path=self._name
            )
            self.failure.__cause__ = error
            waiting = waiters + self._waiters
            self._pending, self._waiters, self._insert_waiters = {}, [], []
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_exception(self.failure)
            return
        if wrote:
            self.transactions += 1
            self.durable_transactions += durable
        for position in done.result():
            waiter = inserts[position]
            if not waiter.done():
                waiter.set_exception(
                    JournalError(
                        f"the journal {self._name} refused a record (duplicate local id?)",
                        path=self._name,
                    )
                )
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._waiters or self._prompt:
            # Group commit: every awaited write (and acceptance) queued meanwhile goes next,
            # together with the events queued meanwhile.
            self._start_write()
        elif self._pending and self._timer is None:
            self._timer = self._loop.call_later(EVENT_DELAY, self._start_write)

    def _write_sync(self, ops: Ops, durable: bool) -> list[int]:
        """Write ``ops`` in one transaction; return the positions of the records refused."""
        conn = self._conn
        if not ops:
            return []  # only waiters for what was written before: nothing to commit
        if durable:
            conn.execute("PRAGMA synchronous = FULL")
        try:
            conn.execute("BEGIN")
            try:
                for sql, rows in ops:
                    if len(rows) == 1:
                        conn.execute(sql, rows[0])
                    else:
                        conn.executemany(sql, rows)
            except sqlite3.IntegrityError:
                # One bad record must not take the others down: write them one by one.
                conn.execute("ROLLBACK")
                return _write_each_sync(conn, ops)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return []
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")


def _write_each_sync(conn: sqlite3.Connection, ops: Ops) -> list[int]:
    rejected: list[int] = []
    conn.execute("BEGIN")
    for sql, rows in ops:
        if sql != INSERT:
            conn.executemany(sql, rows)
            continue
        for position, params in enumerate(rows):
            conn.execute("SAVEPOINT op")
            try:
                conn.execute(sql, params)
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO op")
                rejected.append(position)
            conn.execute("RELEASE op")
    conn.execute("COMMIT")
    return rejected
