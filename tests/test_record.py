"""`fingerprint` (``flux_async._record``): stable across processes and versions, and
different for every field of the request, the provider and the model."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from flux_async import GenerationRequest
from flux_async.stores import fingerprint

BASE = GenerationRequest(prompt="a red fox", extra={"b": 1, "a": 2})


def test_fingerprint_is_stable() -> None:
    same = GenerationRequest(prompt="a red fox", extra={"a": 2, "b": 1})
    assert fingerprint(BASE, "shortapi", "flux-dev") == fingerprint(same, "shortapi", "flux-dev")
    assert fingerprint(GenerationRequest(prompt="x", guidance=3), "piapi", "m") == fingerprint(
        GenerationRequest(prompt="x", guidance=3.0), "piapi", "m"
    )
    # Pinned: journals written by one version must be readable by the next.
    assert fingerprint(GenerationRequest(prompt="a red fox"), "shortapi", "flux-dev") == (
        hashlib.sha256(
            b'{"model":"flux-dev","provider":"shortapi","request":{"prompt":"a red fox"}}'
        ).hexdigest()
    )


CHANGES: dict[str, Any] = {
    "prompt": "a red fox!",
    "image_url": "https://x/in.png",
    "aspect_ratio": "16:9",
    "width": 1024,
    "height": 768,
    "num_images": 2,
    "seed": 0,
    "steps": 28,
    "guidance": 3.5,
    "strength": 0.5,
    "model": "flux-dev",
    "extra": {"b": 1, "a": 3},
}


def test_every_request_field_is_in_the_changes() -> None:
    assert set(CHANGES) == set(GenerationRequest.__struct_fields__)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_fingerprint_changes_with_every_field(field: str) -> None:
    changed = msgspec.structs.replace(BASE, **{field: CHANGES[field]})
    assert fingerprint(changed, "shortapi", "flux-dev") != fingerprint(BASE, "shortapi", "flux-dev")


def test_fingerprint_changes_with_provider_and_model() -> None:
    base = fingerprint(BASE, "shortapi", "flux-dev")
    assert fingerprint(BASE, "piapi", "flux-dev") != base
    assert fingerprint(BASE, "shortapi", "flux-schnell") != base
