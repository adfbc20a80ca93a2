"""flux_async: an asyncio-native client for hosted FLUX image-generation APIs.

::

    async with FluxClient(ShortAPI()) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9")
        print(generation.images[0].url)

Logging goes through the standard `logging` module and the package adds no handler: each
job's life is logged at DEBUG on ``flux_async.jobs``, downloads on
``flux_async.downloads``, the bundled webhook receiver on ``flux_async.webhooks``; no line
carries an API key, callback token or webhook secret. ``logging.basicConfig(level=DEBUG)``
shows them all.
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._client import FluxClient, Job
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts, Webhooks
from ._errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ClientStateError,
    ConfigurationError,
    DownloadError,
    FluxError,
    InsufficientCreditsError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    JobUnknownError,
    Phase,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestError,
    TransportError,
    UnexpectedResponseError,
    UnknownStatusError,
    ValidationError,
)
from ._images import Uploader, UploadError
from ._job import CancelResult
from ._models import (
    Event,
    Generation,
    GenerationRequest,
    Image,
    JobSnapshot,
    JobStatus,
    Outcome,
    OutcomeStatus,
    SubmitParams,
)
from ._prompts import PromptFile, PromptLine, read_prompts
from ._store import JobStore, JournalError, JournalMismatchError, MemoryStore
from .providers import AIMLAPI, PiAPI, Provider, ShortAPI
from .stores.sqlite import SQLiteJournal

if _TYPE_CHECKING:
    from ._webhooks import WebhookAccessLogger, webhook_server_logger

__version__ = "0.1.0.dev0"

# These two live with aiohttp.web, which a client that never receives callbacks does not
# need: they are imported on first use.
_LAZY = {"WebhookAccessLogger", "webhook_server_logger"}


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        from . import _webhooks

        return getattr(_webhooks, name)
    raise AttributeError(f"module 'flux_async' has no attribute {name!r}")


# A library logs; the application decides where that goes.
_logging.getLogger("flux_async").addHandler(_logging.NullHandler())

__all__ = [
    "AIMLAPI",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CancelResult",
    "ClientStateError",
    "ConfigurationError",
    "DownloadError",
    "Event",
    "FluxClient",
    "FluxError",
    "Generation",
    "GenerationRequest",
    "Image",
    "InsufficientCreditsError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobSnapshot",
    "JobStatus",
    "JobStore",
    "JobTimeoutError",
    "JobUnknownError",
    "JournalError",
    "JournalMismatchError",
    "Limits",
    "MemoryStore",
    "Outcome",
    "OutcomeStatus",
    "Phase",
    "PiAPI",
    "PollPolicy",
    "PromptFile",
    "PromptLine",
    "Provider",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RequestError",
    "RetryPolicy",
    "SQLiteJournal",
    "ShortAPI",
    "SubmitParams",
    "Timeouts",
    "TransportError",
    "UnexpectedResponseError",
    "UnknownStatusError",
    "UploadError",
    "Uploader",
    "ValidationError",
    "WebhookAccessLogger",
    "Webhooks",
    "__version__",
    "read_prompts",
    "webhook_server_logger",
]
