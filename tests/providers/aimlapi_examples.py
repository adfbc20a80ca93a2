"""AI/ML API's documented examples and the helpers the AI/ML API adapter tests share."""

from __future__ import annotations

import ast
import json
from typing import Any

from flux_async import GenerationRequest
from flux_async.providers._base import HTTPResponse
from flux_async.providers.aimlapi import AIMLAPI

KEY = "aiml-secret-key-123"
BASE = "https://api.example.test"

# Seed 002/003 (flux/dev/image-to-image page): the Quick Example request, verbatim.
QUICK_EXAMPLE_REQUEST = {
    "prompt": "Add a bird to the foreground of the photo.",
    "model": "flux/dev/image-to-image",
    "image_url": "https://zovi0.github.io/public_misc/flux-dev-t-rex.png",
    "strength": 0.8,
}
# The same page's raw HTTP example (seed 003).
HTTP_EXAMPLE_REQUEST = {
    "model": "flux/dev/image-to-image",
    "guidance_scale": 1,
    "num_inference_steps": 1,
    "enable_safety_checker": True,
    "prompt": "text",
    "num_images": 1,
    "seed": 1,
    "image_url": "https://example.com",
    "strength": 0.95,
}
# The Quick Example's response as the page prints it (a Python repr), verbatim.
QUICK_EXAMPLE_RESPONSE = ast.literal_eval(
    "{'images': [{'url': 'https://cdn.aimlapi.com/eagle/files/lion/EyuGvQzlsBoVUB8qjV776.png', "
    "'width': 1024, 'height': 768, 'content_type': 'image/png'}], 'timings': {'inference': "
    "2.544010079000145}, 'seed': 2819715747, 'has_nsfw_concepts': [False], 'prompt': "
    "'Add a bird to the foreground of the photo.'}"
)
# The OpenAPI response schema's example (providers.md 2.3, flux-2 .json files).
SCHEMA_RESPONSE = {
    "data": [
        {
            "url": "https://cdn.aimlapi.com/generations/hedgehog/"
            "1749730923700-29fe35d2-4aef-4bc5-a911-6c39884d16a8.png",
            "b64_json": None,
        }
    ],
    "meta": {"usage": {"credits_used": 120000}},
}


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(status, headers or {}, raw)


def body_of(api: AIMLAPI, **params: Any) -> dict[str, Any]:
    prepared = api.prepare(GenerationRequest(**{"prompt": "p", **params}))
    request = api.build_create(prepared, callback_url=None, webhook_secret=None)
    result: dict[str, Any] = json.loads(request.body or b"")
    return result
