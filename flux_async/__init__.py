"""flux_async: an asyncio-native client for hosted FLUX image-generation APIs.

::

    async with FluxClient(ShortAPI()) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9")
        print(generation.images[0].url)
"""

import logging as _logging

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
from ._models import (
    Event,
    Generation,
    GenerationRequest,
    Image,
    JobSnapshot,
    JobStatus,
    Outcome,
)
from ._prompts import PromptFile, PromptLine, read_prompts
from .providers import AIMLAPI, PiAPI, Provider, ShortAPI

__version__ = "0.1.0.dev0"

# A library logs; the application decides where that goes.
_logging.getLogger("flux_async").addHandler(_logging.NullHandler())

__all__ = [
    "AIMLAPI",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
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
    "JobTimeoutError",
    "JobUnknownError",
    "Limits",
    "Outcome",
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
    "ShortAPI",
    "Timeouts",
    "TransportError",
    "UnexpectedResponseError",
    "UnknownStatusError",
    "ValidationError",
    "Webhooks",
    "__version__",
    "read_prompts",
]
