"""The public surface: names other code relies on, and no secrets in reprs."""

from __future__ import annotations

import pytest

import flux_async

#: Every public name, exactly: adding one is a decision, removing one breaks users.
PUBLIC_NAMES = [
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
TESTING_NAMES = ["CallbackRecord", "FakeJob", "FakeProvider", "Faults", "Latency"]


def test_public_names() -> None:
    assert flux_async.__all__ == PUBLIC_NAMES
    assert PUBLIC_NAMES == sorted(PUBLIC_NAMES)
    for name in flux_async.__all__:
        assert hasattr(flux_async, name), name


@pytest.mark.slow  # a fresh interpreter: the only way to see what importing loads
def test_importing_the_package_does_not_import_aiohttp_web() -> None:
    import subprocess
    import sys

    code = "import sys, flux_async; print('aiohttp.web' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_testing_names() -> None:
    from flux_async import testing

    assert testing.__all__ == TESTING_NAMES
    for name in testing.__all__:
        assert hasattr(testing, name), name


def test_the_command_is_not_a_public_module() -> None:
    import importlib.util

    assert importlib.util.find_spec("flux_async.cli") is None
    assert importlib.util.find_spec("flux_async.__main__") is not None


def test_error_tree() -> None:
    assert issubclass(flux_async.ValidationError, ValueError)
    assert issubclass(flux_async.JobTimeoutError, TimeoutError)
    for name in flux_async.__all__:
        obj = getattr(flux_async, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, flux_async.FluxError), name
    assert issubclass(flux_async.UnknownStatusError, flux_async.ProviderError)
    assert issubclass(flux_async.JobUnknownError, flux_async.JobError)


def test_client_repr_hides_the_key() -> None:
    key = "sk-very-secret-0001"
    client = flux_async.FluxClient(flux_async.ShortAPI(key))
    assert key not in repr(client)
    assert key not in repr(client.provider)
