"""`JobRecord`: what a job store keeps about one job, and `fingerprint`, the digest that
recognises an input again across runs. The stores and their rules are in `_store.py`."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import msgspec

from ._models import Generation, GenerationRequest, Image, JobSnapshot, JobStatus

__all__ = ["JobRecord", "fingerprint"]


def fingerprint(request: GenerationRequest, provider: str, model: str) -> str:
    """Return a stable hex digest of what would be sent: the request, provider and model.

    Equal requests give equal fingerprints across processes and versions: fields are
    normalised through the request's type (``guidance=3`` and ``guidance=3.0`` agree), keys
    are sorted, and fields left at ``None`` (or an empty ``extra``) are left out, so adding
    an optional field to `GenerationRequest` does not change old fingerprints.
    """
    normal = msgspec.to_builtins(msgspec.convert(msgspec.to_builtins(request), GenerationRequest))
    fields = {
        name: value
        for name, value in normal.items()
        if value is not None and not (name == "extra" and not value)
    }
    text = msgspec.json.encode(
        {"provider": provider, "model": model, "request": fields}, order="sorted"
    )
    return hashlib.sha256(text).hexdigest()


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a store keeps about one job. Holds no secret (digests only).

    ``request`` is the `GenerationRequest` in builtin form (`generation_request` rebuilds
    it), kept so a resume can re-attach the job or, only when asked, send it again.
    """

    local_id: str
    """The client's own id (also in the callback address)."""
    batch_id: str | None = None
    """The batch the job belongs to; ``None`` for a job submitted on its own."""
    index: int | None = None
    """The input's position in its batch, from 0."""
    attempt: int = 1
    """Which create of this input the record is: 1, then 2 for an explicit resubmit, ..."""
    fingerprint: str
    """`fingerprint` of the request, provider and model."""
    provider: str
    model: str
    request: dict[str, Any]
    token_hash: bytes | None = None
    """SHA-256 of the callback token (the token itself is never stored)."""
    secret_hash: bytes | None = None
    """SHA-256 of the PiAPI webhook secret (the secret itself is never stored)."""
    job_id: str | None = None
    """The provider's id, once it accepted the job."""
    status: JobStatus = JobStatus.ALLOCATED
    cost: Decimal | None = None
    """What the provider reported charging, in its unit."""
    refunded: bool = False
    images: tuple[Image, ...] = ()
    seed: int | None = None
    polls: int = 0
    files: tuple[str, ...] = ()
    """Where the images were saved."""
    error_kind: str | None = None
    """The class name of the error that ended the job (``"JobFailedError"``, ...)."""
    error_message: str | None = None
    created_at: float
    """``time.time()`` at allocation."""
    accepted_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def allocate(
        cls,
        request: GenerationRequest,
        *,
        local_id: str,
        provider: str,
        model: str,
        created_at: float,
        batch_id: str | None = None,
        index: int | None = None,
        attempt: int = 1,
        token_hash: bytes | None = None,
        secret_hash: bytes | None = None,
    ) -> JobRecord:
        """Return the record of a job about to be created (status ``allocated``)."""
        return cls(
            local_id=local_id,
            batch_id=batch_id,
            index=index,
            attempt=attempt,
            fingerprint=fingerprint(request, provider, model),
            provider=provider,
            model=model,
            request=msgspec.to_builtins(request),
            token_hash=token_hash,
            secret_hash=secret_hash,
            created_at=created_at,
        )

    def generation_request(self) -> GenerationRequest:
        """Return the request as a `GenerationRequest` again."""
        return msgspec.convert(self.request, GenerationRequest)

    def snapshot(self) -> JobSnapshot:
        """Return the job as a `JobSnapshot`, as the registry would have shown it."""
        return JobSnapshot(
            local_id=self.local_id,
            provider=self.provider,
            model=self.model,
            status=self.status,
            id=self.job_id,
            cost=self.cost,
            refunded=self.refunded,
            created_at=self.created_at,
            finished_at=self.finished_at,
            polls=self.polls,
            error=self.error_message,
        )

    def generation(self) -> Generation | None:
        """Return the `Generation` of a succeeded job, else ``None``."""
        if self.status is not JobStatus.SUCCEEDED or self.job_id is None:
            return None
        return Generation(
            images=self.images,
            provider=self.provider,
            model=self.model,
            job_id=self.job_id,
            local_id=self.local_id,
            cost=self.cost,
            seed=self.seed,
        )
