"""The sans-IO callback router and its helpers: bytes in, status out, no HTTP."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from flux_async import AIMLAPI, ConfigurationError, JobStatus, PiAPI, ShortAPI, Webhooks
from flux_async._callbacks import (
    CallbackRouter,
    check_webhooks,
    new_secret,
    redact,
    result_hosts,
    trusted_image_url,
)
from flux_async._registry import Entry, Registry
from flux_async.providers._base import Provider, Update

API = "http://127.0.0.1:9"  # never contacted: the router does no I/O


@dataclass
class Harness:
    provider: Provider
    router: CallbackRouter
    registry: Registry
    entry: Entry
    token: str
    secret: str | None
    applied: list[Update] = field(default_factory=list)
    verified: list[Entry] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/flux-webhooks/{self.provider.name}/{self.entry.local_id}/{self.token}"

    def headers(self) -> dict[str, str]:
        return {"X-Webhook-Secret": self.secret} if self.secret else {}

    def post(
        self, body: bytes, path: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        answer = self.router.handle(
            "POST", path or self.path, self.headers() if headers is None else headers, body
        )
        return answer.status, answer.body


def harness(name: str, **config: Any) -> Harness:
    provider: Provider = (ShortAPI if name == "shortapi" else PiAPI)("key", base_url=API)
    registry = Registry(clock=time.time)
    token, token_hash = new_secret()
    secret, secret_hash = new_secret() if name == "piapi" else (None, None)
    entry = registry.allocate(name, "flux", token_hash=token_hash, secret_hash=secret_hash)
    registry.accept(entry, "job-1")
    applied: list[Update] = []
    verified: list[Entry] = []

    def apply(target: Entry, update: Update) -> None:
        applied.append(update)
        registry.apply(target, update)

    router = CallbackRouter(
        provider=provider,
        registry=registry,
        config=Webhooks(**config),
        apply=apply,
        verify=verified.append,
    )
    return Harness(provider, router, registry, entry, token, secret, applied, verified)


def terminal(name: str, image: str = f"{API}/img/1.png", job_id: str = "job-1") -> bytes:
    if name == "shortapi":
        return json.dumps(
            {
                "code": 0,
                "data": {"job_id": job_id, "status": 2, "result": {"images": [{"url": image}]}},
            }
        ).encode()
    return json.dumps(
        {
            "timestamp": 1,
            "data": {"task_id": job_id, "status": "completed", "output": {"image_url": image}},
        }
    ).encode()


@pytest.fixture(params=["shortapi", "piapi"])
def h(request: pytest.FixtureRequest) -> Harness:
    return harness(str(request.param))


def test_terminal_callback_is_a_hint_by_default(h: Harness) -> None:
    assert h.post(terminal(h.provider.name)) == (200, b"ok\n")
    assert h.verified == [h.entry] and h.applied == []
    assert h.entry.status is JobStatus.SUBMITTED  # the provider's answer decides


def test_unknown_and_wrong_tokens_get_one_uniform_404(h: Harness) -> None:
    body = terminal(h.provider.name)
    name, local = h.provider.name, h.entry.local_id
    forged = [
        f"/flux-webhooks/{name}/{'0' * 16}/{h.token}",  # unknown job
        f"/flux-webhooks/{name}/{local}/{'A' * len(h.token)}",  # wrong token
        f"/flux-webhooks/{name}/{local}/{h.token[:-1]}",  # truncated token
        f"/flux-webhooks/other/{local}/{h.token}",  # another provider
        f"/{local}/{h.token}",  # too short
        "/" + "x" * 5000,
    ]
    answers = {h.post(body, path) for path in forged}
    assert answers == {(404, b"not found\n")}
    assert h.verified == [] and h.applied == [] and h.entry.status is JobStatus.SUBMITTED


def test_duplicates_and_late_callbacks_are_200_no_ops(h: Harness) -> None:
    h.registry.apply(h.entry, Update(status=JobStatus.SUCCEEDED))
    assert h.post(terminal(h.provider.name)) == (200, b"already finished\n")
    h.router.remember_finished(h.entry)
    h.registry.release(h.entry)
    assert h.post(terminal(h.provider.name)) == (200, b"already finished\n")
    wrong = h.path.rsplit("/", 1)[0] + "/" + "B" * 43
    assert h.post(terminal(h.provider.name), wrong)[0] == 404
    assert h.verified == [] and h.applied == []


def test_remembered_jobs_are_bounded() -> None:
    h = harness("shortapi", remember_finished=1)
    h.registry.apply(h.entry, Update(status=JobStatus.SUCCEEDED))
    h.router.remember_finished(h.entry)
    h.registry.release(h.entry)
    other = h.registry.allocate("shortapi", "flux", token_hash=new_secret()[1])
    h.registry.apply(other, Update(status=JobStatus.FAILED))
    h.router.remember_finished(other)
    assert h.post(terminal("shortapi"))[0] == 404  # forgotten: the oldest went first


def test_piapi_secret_missing_or_wrong_is_401() -> None:
    h = harness("piapi")
    body = terminal("piapi")
    for headers in (
        {},
        {"x-webhook-secret": "wrong"},
        {"x-webhook-secret": "ünïcödé"},
        {"x-webhook-secret": (h.secret or "") + "x"},
    ):
        assert h.post(body, headers=headers) == (401, b"missing or wrong webhook secret\n")
    assert h.verified == []
    assert h.post(body, headers={"X-WEBHOOK-SECRET": h.secret or ""})[0] == 200


def test_undecodable_bodies_are_400(h: Harness) -> None:
    for body in (
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[1,2]",
        b'"text"',
        b"null",
        b'{"data":' * 3000,
        b"[" * 50_000,
    ):
        status, _ = h.post(body)
        assert status == 400, body[:20]
    assert h.verified == [] and h.applied == []


def test_oversized_body_is_413() -> None:
    body = terminal("shortapi")
    h = harness("shortapi", max_body_bytes=len(body))
    assert h.post(body + b" ")[0] == 413
    assert h.verified == []
    assert h.post(body)[0] == 200


def test_method_other_job_and_unknown_status(h: Harness) -> None:
    answer = h.router.handle("GET", h.path, h.headers(), terminal(h.provider.name))
    assert answer.status == 405
    assert h.post(terminal(h.provider.name, job_id="someone-else"))[0] == 409
    assert h.verified == []
    unknown = (
        b'{"code": 0, "data": {"job_id": "job-1", "status": "exploded"}}'
        if h.provider.name == "shortapi"
        else b'{"data": {"task_id": "job-1", "status": "exploded"}}'
    )
    assert h.post(unknown)[0] == 422
    assert h.verified == [h.entry]  # undocumented status: the provider is asked


def test_hostile_headers_and_arguments_never_raise(h: Harness) -> None:
    class Exploding(dict[str, str]):
        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

        def items(self) -> Any:
            raise RuntimeError("boom")

    status, _ = h.post(terminal(h.provider.name), headers=Exploding())
    assert status == (401 if h.secret else 200)
    assert h.router.handle(None, None, None, None).status == 405  # type: ignore[arg-type]
    assert h.router.handle("POST", h.path, {}, None).status in (401, 413)  # type: ignore[arg-type]


# -- trusted payloads ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shortapi", "piapi"])
def test_trusted_payload_is_applied_without_a_query(name: str) -> None:
    h = harness(name, trust_payload=True)
    assert h.post(terminal(name))[0] == 200
    assert h.verified == [] and len(h.applied) == 1
    assert h.entry.status is JobStatus.SUCCEEDED
    assert [i.url for i in h.entry.images] == [f"{API}/img/1.png"]


@pytest.mark.parametrize(
    ("name", "config", "image"),
    [
        ("shortapi", {"result_hosts": ("127.0.0.1",)}, "https://evil.example/x.png"),
        ("shortapi", {}, "file:///etc/passwd"),
        ("shortapi", {}, "javascript:alert(1)"),
        ("shortapi", {}, "data:image/png;base64,AAAA"),
        ("shortapi", {}, "https://user:pw@evil.example/x.png"),
        ("piapi", {}, "https://evil.example/x.png"),  # PiAPI's result hosts are known
        ("piapi", {}, "https://img.theapi.app.evil.example/x.png"),
    ],
)
def test_trusted_payload_with_a_foreign_image_url_is_verified_instead(
    name: str, config: dict[str, Any], image: str
) -> None:
    h = harness(name, trust_payload=True, **config)
    assert h.post(terminal(name, image=image))[0] == 200
    assert h.applied == [] and h.verified == [h.entry]
    assert h.entry.status is JobStatus.SUBMITTED and h.entry.images == ()


def test_result_hosts() -> None:
    shortapi = ShortAPI("k", base_url=API)
    piapi = PiAPI("k", base_url=API)
    assert result_hosts(shortapi, Webhooks()) is None  # unknown: any http(s) host
    assert result_hosts(piapi, Webhooks()) == frozenset({"img.theapi.app", "127.0.0.1"})
    configured = Webhooks(result_hosts=("CDN.example",))
    assert result_hosts(piapi, configured) == frozenset({"cdn.example"})


@pytest.mark.parametrize(
    ("url", "hosts", "expected"),
    [
        ("https://cdn.example/a.png", None, True),
        ("http://cdn.example/a.png", None, True),
        ("ftp://cdn.example/a.png", None, False),
        ("https:///a.png", None, False),
        ("//cdn.example/a.png", None, False),
        ("https://cdn.example/a.png", frozenset({"cdn.example"}), True),
        ("https://CDN.example:8443/a.png", frozenset({"cdn.example"}), True),
        ("https://x.cdn.example/a.png", frozenset({"cdn.example"}), False),
        ("https://x.cdn.example/a.png", frozenset({".cdn.example"}), True),
        ("https://evilcdn.example/a.png", frozenset({".cdn.example"}), False),
        ("https://[::1/a.png", None, False),
        (5, None, False),
    ],
)
def test_trusted_image_url(url: Any, hosts: frozenset[str] | None, expected: bool) -> None:
    assert trusted_image_url(url, hosts) is expected


# -- redaction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/flux-webhooks/shortapi/0123456789abcdef/{token}",
            "/flux-webhooks/shortapi/0123456789abcdef/<token>",
        ),
        (
            "/flux-webhooks/shortapi/0123456789abcdef/{token}/x",
            "/flux-webhooks/shortapi/0123456789abcdef/<token>/x",
        ),
        (
            "/p/shortapi/0123456789abcdef/{token}?x=1",
            "/p/shortapi/0123456789abcdef/<token>?<query>",
        ),
        ("//{token}", "//<token>"),
        ("/{token}.png", "/<token>.png"),
        ("/a/{token}/{token}/b", "/a/<token>/<token>/b"),
        ("/x?{token}", "/x?<query>"),
        ("/" + "f" * 64, "/<token>"),  # hex too
        ("/health", "/health"),
        ("/a\nb\x00", "/a\\nb\\x00"),
    ],
)
def test_redact_hides_every_token_like_segment(path: str, expected: str) -> None:
    # A fresh token in each run (made here, not at collection: every pytest-xdist worker
    # must collect the same test ids).
    token = new_secret()[0]
    path = path.replace("{token}", token)
    assert redact(path) == expected
    assert token not in redact(path)


def test_redact_bounds_its_output() -> None:
    shown = redact("/a." * 5000)
    assert len(shown) < 250 and shown.endswith("...")
    assert redact(None) == "<not a path>"  # type: ignore[arg-type]


# -- configuration -------------------------------------------------------------------------


def test_check_webhooks() -> None:
    with pytest.raises(ConfigurationError, match="synchronously"):
        check_webhooks(AIMLAPI("k"), Webhooks())
    with pytest.raises(ConfigurationError, match="public_url"):
        check_webhooks(ShortAPI("k"), Webhooks(serve=False))
    check_webhooks(ShortAPI("k"), Webhooks(trust_payload=True))  # the URL token authenticates
    check_webhooks(PiAPI("k"), Webhooks(trust_payload=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"read_timeout": 0}, "read_timeout"),
        ({"read_timeout": float("nan")}, "read_timeout"),
        ({"backlog": 0}, "backlog"),
        ({"backlog": True}, "backlog"),
        ({"backlog": 1 << 20}, "backlog"),
        ({"trust_payload": "yes"}, "trust_payload"),
        ({"result_hosts": "cdn.example"}, "tuple"),
        ({"result_hosts": ["cdn.example"]}, "tuple"),
        ({"result_hosts": ("https://cdn.example",)}, "bare host"),
        ({"result_hosts": ("cdn.example:443",)}, "bare host"),
        ({"result_hosts": ("cdn.example/x",)}, "bare host"),
        ({"result_hosts": ("",)}, "bare host"),
        ({"result_hosts": (5,)}, "bare host"),
        ({"port": 70000}, "port"),
        ({"path_prefix": "hooks"}, "path_prefix"),
        ({"max_body_bytes": -1}, "max_body_bytes"),
    ],
)
def test_webhooks_config_is_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Webhooks(**kwargs)


def test_webhooks_defaults() -> None:
    config = Webhooks(result_hosts=("cdn.example", ".theapi.app"))
    assert config.backlog >= 1024 and 0 < config.read_timeout <= 30
    assert config.trust_payload is False  # verify-by-fetch stays the default
