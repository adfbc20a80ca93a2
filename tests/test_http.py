"""Table tests of the sans-IO HTTP values: status to phase, Retry-After, safe reprs."""

from __future__ import annotations

import pytest

from flux_async import Phase
from flux_async._http import HTTPRequest, HTTPResponse, parse_retry_after, phase_for_status


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (400, Phase.DEFINITIVE),
        (401, Phase.DEFINITIVE),
        (403, Phase.DEFINITIVE),
        (404, Phase.DEFINITIVE),
        (422, Phase.DEFINITIVE),
        (429, Phase.REFUSED),
        (503, Phase.REFUSED),
        (500, Phase.AMBIGUOUS),
        (502, Phase.AMBIGUOUS),
        (504, Phase.AMBIGUOUS),
        (520, Phase.AMBIGUOUS),
    ],
)
def test_status_phase(status: int, phase: Phase) -> None:
    assert phase_for_status(status) is phase


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("-4", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 GMT
    assert parse_retry_after(value, now=now) == expected


def test_request_repr_never_shows_headers() -> None:
    request = HTTPRequest(
        "POST",
        "https://api.example/v1",
        operation="create",
        headers={"Authorization": "Bearer sk-secret"},
        body=b"{}",
    )
    assert "sk-secret" not in repr(request) and "create" in repr(request)
    assert repr(HTTPResponse(200, {}, b"abc")) == "HTTPResponse(status=200, 3 bytes)"
