"""The public surface: names other code relies on, and no secrets in reprs."""

from __future__ import annotations

import flux_async


def test_public_names() -> None:
    expected = {
        "FluxClient", "ShortAPI", "Job", "Generation", "Image", "JobStatus", "JobSnapshot",
        "GenerationRequest", "Limits", "PollPolicy", "RetryPolicy", "Timeouts", "Provider",
        "FluxError", "ValidationError", "ConfigurationError", "ClientStateError",
        "RequestError", "TransportError", "ProviderError", "AuthenticationError",
        "InsufficientCreditsError", "RateLimitedError", "ProviderUnavailableError",
        "BadRequestError", "UnexpectedResponseError", "UnknownStatusError", "JobError",
        "JobFailedError", "JobTimeoutError", "JobCancelledError", "JobUnknownError", "Phase",
    }
    assert expected <= set(flux_async.__all__)
    assert flux_async.__all__ == sorted(flux_async.__all__)
    for name in flux_async.__all__:
        assert hasattr(flux_async, name), name


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


def test_testing_package_is_public() -> None:
    from flux_async import testing

    assert {"FakeProvider", "Faults"} <= set(testing.__all__)
