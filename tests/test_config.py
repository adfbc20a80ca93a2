"""Validation of the policy objects in flux_async._config: every refusal names the field,
and the values at the edge of what is allowed are accepted."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest

from flux_async import (
    ConfigurationError,
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    Webhooks,
)
from flux_async._config import env_api_key

NOT_NUMBERS: list[Any] = [None, "1", True, [1]]
NOT_POSITIVE: list[Any] = [0, -1, -0.5, math.inf, -math.inf, math.nan]

# (class, field) for every field checked by _positive without allow_none.
REQUIRED_POSITIVE = [
    (Limits, "max_downloads"),
    (Limits, "max_download_bytes"),
    (PollPolicy, "wait_max"),
    (PollPolicy, "timeout"),
    (RetryPolicy, "attempts"),
    (RetryPolicy, "wait_initial"),
    (RetryPolicy, "wait_max"),
    (RetryPolicy, "retry_after_max"),
    (Timeouts, "connect"),
    (Timeouts, "pool"),
    (Timeouts, "read"),
    (Timeouts, "read_sync"),
    (Webhooks, "max_body_bytes"),
    (Webhooks, "read_timeout"),
    (Webhooks, "orphan_window"),
    (Webhooks, "remember_finished"),
]
# Fields that may be None ("no limit" / "the default"), else positive.
OPTIONAL_POSITIVE = [
    (Limits, "max_jobs_in_flight"),
    (Limits, "max_connections"),
    (Limits, "polls_per_second"),
    (Limits, "creates_per_second"),
    (PollPolicy, "wait_first"),
    (Webhooks, "grace"),
]
if "max_upload_bytes" in {f.name for f in dataclasses.fields(Limits)}:
    REQUIRED_POSITIVE.append((Limits, "max_upload_bytes"))


def _ids(case: tuple[type, str]) -> str:
    return f"{case[0].__name__}.{case[1]}"


@pytest.mark.parametrize("case", REQUIRED_POSITIVE + OPTIONAL_POSITIVE, ids=_ids)
@pytest.mark.parametrize("value", NOT_POSITIVE, ids=repr)
def test_numbers_must_be_finite_and_positive(case: tuple[type, str], value: float) -> None:
    cls, field = case
    with pytest.raises(ConfigurationError, match=rf"{cls.__name__}\.{field} must be a finite"):
        cls(**{field: value})


@pytest.mark.parametrize("case", REQUIRED_POSITIVE + OPTIONAL_POSITIVE, ids=_ids)
@pytest.mark.parametrize("value", NOT_NUMBERS, ids=repr)
def test_numbers_must_be_numbers(case: tuple[type, str], value: Any) -> None:
    cls, field = case
    if value is None and getattr(cls(), field) is None:
        cls(**{field: None})  # a default of None: "no limit" or "the provider's"
        return
    with pytest.raises(ConfigurationError, match=rf"{cls.__name__}\.{field} must be a number"):
        cls(**{field: value})


@pytest.mark.parametrize("case", REQUIRED_POSITIVE + OPTIONAL_POSITIVE, ids=_ids)
def test_small_positive_numbers_are_accepted(case: tuple[type, str]) -> None:
    cls, field = case
    value = 1 if isinstance(getattr(cls(), field), int) else 0.001
    assert getattr(cls(**{field: value}), field) == value


@pytest.mark.parametrize("cls", [PollPolicy, RetryPolicy])
def test_backoff_base_below_one_would_shrink_the_waits(cls: type) -> None:
    with pytest.raises(ConfigurationError, match=rf"{cls.__name__}\.wait_exp_base must be >= 1"):
        cls(wait_exp_base=0.99)
    with pytest.raises(ConfigurationError, match="wait_exp_base"):
        cls(wait_exp_base=-2)
    assert cls(wait_exp_base=1).wait_exp_base == 1  # a constant cadence is fine


@pytest.mark.parametrize("field", ["budget_ratio", "budget_reserve"])
def test_retry_budget_may_be_zero_not_negative(field: str) -> None:
    with pytest.raises(ConfigurationError, match="budget_ratio and budget_reserve must be >= 0"):
        RetryPolicy(**{field: -0.1})
    assert getattr(RetryPolicy(**{field: 0}), field) == 0


def test_close_grace_may_be_zero_but_not_negative_or_a_bool() -> None:
    assert Timeouts(close_grace=0).close_grace == 0
    with pytest.raises(ConfigurationError, match=re.escape("Timeouts.close_grace")):
        Timeouts(close_grace=-1)
    with pytest.raises(ConfigurationError, match=re.escape("Timeouts.close_grace")):
        Timeouts(close_grace=False)


def test_policies_are_frozen() -> None:
    for policy in (Limits(), PollPolicy(), RetryPolicy(), Timeouts(), Webhooks()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            policy.__setattr__(dataclasses.fields(policy)[0].name, 1)


# -- Webhooks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://example.com/hooks", "example.com/hooks", "https://", "/hooks"]
)
def test_public_url_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape("Webhooks.public_url must be an http")):
        Webhooks(public_url=url)


def test_public_url_accepts_http_and_https() -> None:
    assert Webhooks(public_url="https://example.com/flux").public_url == "https://example.com/flux"
    assert Webhooks(public_url="http://10.0.0.1:8080").public_url == "http://10.0.0.1:8080"


@pytest.mark.parametrize("prefix", ["hooks", "", "/hooks/{id}"])
def test_path_prefix_must_be_an_absolute_plain_path(prefix: str) -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape("Webhooks.path_prefix must start with '/'")
    ):
        Webhooks(path_prefix=prefix)


def test_prefix_drops_the_trailing_slash() -> None:
    assert Webhooks(path_prefix="/hooks/").prefix == "/hooks"
    assert Webhooks(path_prefix="/").prefix == ""


@pytest.mark.parametrize("port", [-1, 65536, 8080.0, "8080", None])
def test_port_must_be_0_to_65535(port: Any) -> None:
    with pytest.raises(ConfigurationError, match=re.escape("Webhooks.port must be 0-65535")):
        Webhooks(port=port)


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_edges_are_accepted(port: int) -> None:
    assert Webhooks(port=port).port == port


@pytest.mark.parametrize("backlog", [0, 65536, True, 1.5, "10"])
def test_backlog_must_be_1_to_65535(backlog: Any) -> None:
    with pytest.raises(ConfigurationError, match=re.escape("Webhooks.backlog must be 1-65535")):
        Webhooks(backlog=backlog)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_trust_payload_must_be_a_bool(value: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape("Webhooks.trust_payload must be True or False")
    ):
        Webhooks(trust_payload=value)


@pytest.mark.parametrize("hosts", ["img.example.com", ["img.example.com"]])
def test_result_hosts_must_be_a_tuple(hosts: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape("Webhooks.result_hosts must be a tuple")
    ):
        Webhooks(result_hosts=hosts)


@pytest.mark.parametrize(
    "host",
    [
        "https://img.example.com",
        "img.example.com:443",
        "img.example.com/x",
        "",
        ".",
        "a..b",
        "user@host",
        "a b",
        "x" * 254,
        5,
    ],
)
def test_result_hosts_entries_must_be_bare_host_names(host: Any) -> None:
    with pytest.raises(ConfigurationError, match="entries must be bare host names"):
        Webhooks(result_hosts=(host,))


def test_result_hosts_take_names_subdomain_wildcards_and_addresses() -> None:
    hosts = ("img.example.com", ".cdn.example.com", "127.0.0.1")
    assert Webhooks(result_hosts=hosts).result_hosts == hosts


# -- environment ------------------------------------------------------------------------------


def test_env_api_key_strips_and_treats_blank_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_TEST_KEY", "  sk-123 \n")
    assert env_api_key("FLUX_TEST_KEY") == "sk-123"
    monkeypatch.setenv("FLUX_TEST_KEY", "   ")
    assert env_api_key("FLUX_TEST_KEY") is None
    monkeypatch.delenv("FLUX_TEST_KEY")
    assert env_api_key("FLUX_TEST_KEY") is None
