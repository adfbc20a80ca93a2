"""PiAPI's documented examples and the answer builders the PiAPI adapter tests share."""

from __future__ import annotations

import copy
import json
from typing import Any

from flux_async.providers._base import HTTPResponse

KEY = "pi-secret-key-123"
SECRET = "whsec-do-not-leak-42"
BASE = "https://api.example.test"

# providers.md 3.3 / seed 004: the image-to-image request and response examples, verbatim.
IMG2IMG_REQUEST = {
    "model": "Qubico/flux1-schnell",
    "task_type": "img2img",
    "input": {"prompt": "a bear", "image": "https://i.ibb.co/J7ZNgSG/01.jpg"},
    "config": {"webhook_config": {"endpoint": "https://webhook.site/xxxx", "secret": ""}},
}
IMG2IMG_RESPONSE = {
    "code": 200,
    "data": {
        "task_id": "1631d053-2352-4add-95cc-360fc52d5f89",
        "model": "Qubico/flux1-schnell",
        "task_type": "img2img",
        "status": "pending",
        "config": {"webhook_config": {"endpoint": "https://webhook.site/xxxx", "secret": ""}},
        "input": {
            "prompt": "a bear",
            "negative_prompt": "",
            "image": "https://i.ibb.co/J7ZNgSG/01.jpg",
            "width": 0,
            "height": 0,
            "steps": 0,
        },
        "output": None,
        "meta": {
            "created_at": "2024-09-25T07:40:08.333962391Z",
            "started_at": "0001-01-01T00:00:00Z",
            "ended_at": "0001-01-01T00:00:00Z",
            "usage": {"type": "quota", "frozen": 0, "consume": 20000},
            "is_using_private_pool": False,
        },
        "detail": None,
        "logs": [],
        "error": {"code": 0, "raw_message": "", "message": "", "detail": None},
    },
    "message": "success",
}


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(status, headers or {}, raw)


def task(**changes: Any) -> dict[str, Any]:
    """The documented task object, with the webhook secret set and ``changes`` applied."""
    data = copy.deepcopy(IMG2IMG_RESPONSE["data"])
    data["config"]["webhook_config"]["secret"] = SECRET
    data.update(changes)
    return data


def envelope(**changes: Any) -> HTTPResponse:
    return respond({"code": 200, "message": "success", "data": task(**changes)})


def done(output: Any) -> HTTPResponse:
    return envelope(status="completed", output=output)
