"""Hypothesis strategies for hostile provider answers, shared by the adapters' fuzz tests.

Values are JSON of every type, nested as deep as the adapters read. Object keys are mostly
the names the adapters read (so a nested wrong type lands where it is looked for, e.g.
``error.message``) and otherwise short random text. A field read as a leaf gets `SHALLOW`
values. Every field that is read still gets every wrong type, at about a third of the
generation time of the 20-leaf `st.recursive` trees these tests used before.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["FUZZ", "JSON_VALUES", "SHALLOW", "WIRE_KEYS", "spoiled"]

WIRE_KEYS = (
    # the envelopes and task/job data (providers.md 1.3-1.4, 2.3-2.4, 3.4-3.7)
    "code",
    "message",
    "info",
    "error",
    "detail",
    "data",
    "status",
    "statusCode",
    "task_id",
    "job_id",
    "id",
    "requestId",
    "raw_message",
    # images and money
    "output",
    "result",
    "images",
    "url",
    "image_url",
    "image_urls",
    "image_base64",
    "b64_json",
    "width",
    "height",
    "content_type",
    "meta",
    "usage",
    "consume",
    "credits_used",
    "tokens_used",
    "amount",
    "refunded",
    "seed",
    # the webhook echo that must never leak
    "config",
    "webhook_config",
    "secret",
    "endpoint",
)

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
KEYS = st.sampled_from(WIRE_KEYS) | st.text(max_size=4)
SHALLOW = LEAVES | st.lists(LEAVES, max_size=2) | st.dictionaries(KEYS, LEAVES, max_size=2)
"""Any JSON type, one level deep at most: for a field read as a leaf (a URL, a size, a
charge, a secret), where deeper nesting reaches no more code and only costs time."""
JSON_VALUES = SHALLOW | st.lists(SHALLOW, max_size=3) | st.dictionaries(KEYS, SHALLOW, max_size=3)
"""Any JSON value up to three levels deep (``{"error": {"message": [...]}}``), as deep as
any adapter reads; deeper nesting (and msgspec's recursion limit) has its own examples."""


def spoiled(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A valid document with one to three of its fields (at any depth) replaced by any JSON.

    Most of the document still makes sense, so the reader of each field runs: a random
    document would mostly be refused at its first field and never reach the ones below.
    """

    @st.composite
    def draw(draw: st.DrawFn) -> Any:
        document = copy.deepcopy(draw(valid))
        for place in draw(_spoils(tuple(sorted(_places(document), key=len)))):
            _replace(document, place, draw(JSON_VALUES))
        return document

    return draw()


@functools.lru_cache(maxsize=32)
def _spoils(places: tuple[tuple[Any, ...], ...]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    # Built once per shape of document: building strategies costs more than drawing.
    return st.lists(st.sampled_from(places), min_size=1, max_size=3, unique=True)


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    places = [path] if path else []
    if isinstance(value, dict):
        for key, inner in value.items():
            places.extend(_places(inner, (*path, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            places.extend(_places(inner, (*path, index)))
    return places


def _replace(document: Any, place: tuple[Any, ...], value: Any) -> None:
    # A place inside one replaced before it is gone: nothing to do.
    for step in place[:-1]:
        try:
            document = document[step]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(document, dict) or (
        isinstance(document, list) and isinstance(place[-1], int) and place[-1] < len(document)
    ):
        document[place[-1]] = value


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""150 examples a property: about 0.2 s a test with these strategies."""
