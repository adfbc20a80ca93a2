"""flux_async: an asyncio-native client for hosted FLUX image-generation APIs.

::

    async with FluxClient(ShortAPI()) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9")
        print(generation.images[0].url)
"""

from ._client import FluxClient, Job
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ClientStateError,
    ConfigurationError,
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
from ._models import Generation, GenerationRequest, Image, JobSnapshot, JobStatus
from .providers import Provider, ShortAPI

__version__ = "0.1.0.dev0"

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ClientStateError",
    "ConfigurationError",
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
    "Phase",
    "PollPolicy",
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
    "__version__",
]
