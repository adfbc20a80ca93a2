"""Money: a batch's budget holds for every provider, and refunded jobs cost nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flux_async import (
    AIMLAPI,
    BudgetExceededError,
    ConfigurationError,
    FluxClient,
    GenerationRequest,
    Limits,
    PiAPI,
    PollPolicy,
    RetryPolicy,
    ShortAPI,
)
from flux_async.testing import FakeProvider

FAST_POLL = PollPolicy(wait_first=0.01, wait_initial=0.01, wait_max=0.05, timeout=30)
FAST_RETRY = RetryPolicy(wait_initial=0.01, wait_max=0.05)
BIG = Limits(max_jobs_in_flight=64, max_connections=64, polls_per_second=10_000)


def client(provider: object) -> FluxClient:
    return FluxClient(
        provider,
        poll=FAST_POLL,
        retry=FAST_RETRY,
        limits=BIG,
        seed=0,  # type: ignore[arg-type]
    )


def charged(fake: FakeProvider, price: Decimal) -> Decimal:
    """What the provider created, hence charged (at a known price per job)."""
    return sum(fake.creates_per_prompt.values()) * price


async def test_piapi_budget_bounds_spending_from_the_first_wave() -> None:
    # PiAPI publishes no price list the client can use: before the first charge is known,
    # a budget must not let the whole first wave out unchecked (38.7x overspend before).
    async with FakeProvider(latency=0.01) as fake:
        async with client(PiAPI("k", base_url=fake.url)) as c:
            price_probe = await c.generate("probe", model="schnell")
            price = price_probe.cost
            assert price is not None and price > 0
            budget = price * 3
            outcomes = [
                o
                async for o in c.generate_many(
                    ({"prompt": f"p{i}", "model": "schnell"} for i in range(40)),
                    concurrency=20,
                    budget=budget,
                )
            ]
    assert len(outcomes) == 40
    batch_creates = sum(fake.creates_per_prompt.values()) - 1  # less the probe
    assert batch_creates * price <= budget
    assert batch_creates == 3
    assert sum((o.cost or Decimal(0)) for o in outcomes) <= budget
    skipped = [o for o in outcomes if o.status == "skipped"]
    assert len(skipped) == 37
    assert all(isinstance(o.error, BudgetExceededError) for o in skipped)


async def test_aimlapi_budget_of_three_credits_spends_at_most_three() -> None:
    async with FakeProvider(latency=0.01) as fake:
        async with client(AIMLAPI("k", base_url=fake.url)) as c:
            outcomes = [
                o
                async for o in c.generate_many(
                    (f"a{i}" for i in range(25)), concurrency=25, budget=3
                )
            ]
            total = c.total_cost
    assert len(outcomes) == 25
    assert charged(fake, Decimal(1)) <= 3  # one credit per image, one image per job
    assert total <= 3
    assert [o.status for o in outcomes].count("succeeded") == 3


async def test_price_per_job_is_used_before_any_charge_is_known() -> None:
    # With the caller's price the first wave can go out at once, still within budget.
    async with FakeProvider(latency=0.01) as fake:
        async with client(AIMLAPI("k", base_url=fake.url)) as c:
            outcomes = [
                o
                async for o in c.generate_many(
                    (f"b{i}" for i in range(10)),
                    concurrency=10,
                    budget="4",
                    price_per_job="1",
                )
            ]
    assert charged(fake, Decimal(1)) == 4
    assert [o.status for o in outcomes].count("skipped") == 6


@pytest.mark.parametrize("bad", [-1, "x", float("nan")])
async def test_price_per_job_must_be_a_non_negative_number(bad: object) -> None:
    async with FakeProvider(latency=0.01) as fake:
        async with client(AIMLAPI("k", base_url=fake.url)) as c:
            with pytest.raises(ConfigurationError, match="price_per_job"):
                c.generate_many(["x"], budget=1, price_per_job=bad)  # type: ignore[arg-type]
    assert fake.create_attempts == 0


async def test_refunded_jobs_cost_nothing() -> None:
    # The fake marks failed ShortAPI jobs refunded (providers.md §1.4).
    async with FakeProvider(latency=0.01) as fake:
        async with client(ShortAPI("k", base_url=fake.url)) as c:
            outcomes = [
                o
                async for o in c.generate_many(
                    ["[fault:fail] one", "[fault:fail] two", "ok three"], concurrency=1
                )
            ]
            total = c.total_cost
    failed = [o for o in outcomes if o.status == "failed"]
    assert len(failed) == 2
    for outcome in failed:
        assert outcome.refunded
        assert outcome.cost == 0
        assert outcome.job is not None and outcome.job.refunded and outcome.job.cost == 0
    ok = [o for o in outcomes if o.ok]
    assert len(ok) == 1 and not ok[0].refunded and ok[0].cost and ok[0].cost > 0
    assert total == ok[0].cost


async def test_refunded_jobs_do_not_use_up_the_budget() -> None:
    async with FakeProvider(latency=0.01) as fake:
        async with client(ShortAPI("k", base_url=fake.url)) as c:
            price = c.provider.estimate_cost(c.provider.prepare(GenerationRequest(prompt="x")))
            assert price is not None
            inputs = ["[fault:fail] r1", "[fault:fail] r2", "[fault:fail] r3", "s1", "s2"]
            outcomes = [o async for o in c.generate_many(inputs, concurrency=1, budget=price * 2)]
    assert [o.status for o in outcomes] == ["failed"] * 3 + ["succeeded"] * 2
    assert sum(fake.creates_per_prompt.values()) == 5
