"""PiAPI's create request for Flux tasks (providers.md §3.2, §3.3): the models, task types
and limits the fake accepts, and the check of a create body against them."""

from __future__ import annotations

from typing import Any

from ._wire import is_http_url, is_int, is_number

__all__ = ["ADVANCED", "DEV", "MODELS", "SCHNELL", "TASK_TYPES", "size_of", "validate"]

# §3.2. These constants are written from providers.md on purpose and are not shared with
# flux_async/providers/piapi.py (DESIGN, "The fake provider"); do not merge them.
SCHNELL, DEV, ADVANCED = "Qubico/flux1-schnell", "Qubico/flux1-dev", "Qubico/flux1-dev-advanced"
MODELS = (SCHNELL, DEV, ADVANCED)
TASK_TYPES = (
    "txt2img",
    "img2img",
    "txt2img-lora",
    "img2img-lora",
    "fill-inpaint",
    "fill-outpaint",
    "redux-variation",
    "controlnet-lora",
    "kontext",
)
# §3.2: only flux1-dev-advanced supports the LoRA, ControlNet, fill, redux and kontext types.
ADVANCED_ONLY = frozenset(TASK_TYPES) - {"txt2img", "img2img"}
# §3.3 `image`: required for img2img, fill-*, redux and kontext.
NEEDS_IMAGE = frozenset(
    {"img2img", "img2img-lora", "fill-inpaint", "fill-outpaint", "redux-variation", "kontext"}
)
CONTROL_TYPES = ("depth", "canny", "soft_edge", "openpose")
SERVICE_MODES = ("", "public", "private")
MAX_PIXELS = 1_048_576  # §3.3: width * height <= 1,048,576
KONTEXT_MAX_STEPS = 40  # §3.3
DEFAULT_SIZE = 1024  # §3.3: Kontext's height default; the fake uses it for both sides


def validate(body: Any) -> str | None:
    """Check a create body against §3.2 and §3.3; return the error message, if any."""
    if not isinstance(body, dict):
        return "invalid request body: expected a JSON object"
    model = body.get("model")
    if model not in MODELS:
        return f"invalid model: {model!r}, expected one of {', '.join(MODELS)}"
    task_type = body.get("task_type")
    if task_type not in TASK_TYPES:
        return f"invalid task_type: {task_type!r}, expected one of {', '.join(TASK_TYPES)}"
    if task_type in ADVANCED_ONLY and model != ADVANCED:
        return f"task_type {task_type} is only supported by {ADVANCED}, not {model}"
    task_input = body.get("input")
    if not isinstance(task_input, dict):
        return "input is required and must be an object"
    problem = _validate_input(model, task_type, task_input)
    if problem is not None:
        return problem
    return _validate_config(body.get("config"))


def _validate_input(model: str, task_type: str, task_input: dict[str, Any]) -> str | None:
    prompt = task_input.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "input.prompt is required and must be a non-empty string"
    for name in ("width", "height"):
        value = task_input.get(name)
        if value is not None and (not is_int(value) or value <= 0):
            return f"input.{name} must be a positive integer, got {value!r}"
    if "width" in task_input or "height" in task_input:
        width = task_input.get("width") or 1024
        height = task_input.get("height") or 1024
        if width * height > MAX_PIXELS:
            return f"input.width * input.height must be <= {MAX_PIXELS}, got {width}x{height}"
    guidance = task_input.get("guidance_scale")
    if guidance is not None and (not is_number(guidance) or not 1.5 <= guidance <= 5):
        return f"input.guidance_scale must be between 1.5 and 5, got {guidance!r}"
    denoise = task_input.get("denoise")
    if denoise is not None and (not is_number(denoise) or not 0 < denoise <= 1):
        return f"input.denoise must be in (0, 1], got {denoise!r}"
    batch_size = task_input.get("batch_size")
    if batch_size is not None:
        if not is_int(batch_size) or not 1 <= batch_size <= 4:
            return f"input.batch_size must be an integer from 1 to 4, got {batch_size!r}"
        if batch_size > 1 and model != SCHNELL:
            return f"input.batch_size only works for {SCHNELL}"
    steps = task_input.get("steps")
    if steps is not None:
        if not is_int(steps) or steps < 0:
            return f"input.steps must be a non-negative integer, got {steps!r}"
        if task_type == "kontext" and steps > KONTEXT_MAX_STEPS:
            return f"input.steps must be <= {KONTEXT_MAX_STEPS} for kontext, got {steps!r}"
    if task_type in NEEDS_IMAGE:
        image = task_input.get("image")
        if not isinstance(image, str) or not image.strip():
            return f"input.image is required for {task_type}"
    return _validate_lora_and_controlnet(task_type, task_input)


def _validate_lora_and_controlnet(task_type: str, task_input: dict[str, Any]) -> str | None:
    loras = task_input.get("lora_settings")
    if loras is not None and (
        not isinstance(loras, list)
        or not all(isinstance(x, dict) and isinstance(x.get("lora_type"), str) for x in loras)
    ):
        return "input.lora_settings must be a list of objects with a lora_type string"
    lora_count = len(loras) if loras else 0
    # §3.2 capacity: the *-lora types take exactly one LoRA, controlnet-lora zero or one.
    if task_type in ("txt2img-lora", "img2img-lora") and lora_count != 1:
        return f"{task_type} takes exactly 1 entry in input.lora_settings, got {lora_count}"
    if task_type == "controlnet-lora":
        if lora_count > 1:
            return f"controlnet-lora takes at most 1 entry in lora_settings, got {lora_count}"
        controls = task_input.get("control_net_settings")
        if not isinstance(controls, list) or len(controls) != 1:
            return "controlnet-lora takes exactly 1 entry in input.control_net_settings"
        control = controls[0]
        if not isinstance(control, dict) or control.get("control_type") not in CONTROL_TYPES:
            return f"control_net_settings[0].control_type must be one of {CONTROL_TYPES}"
        image = control.get("control_image")
        if not isinstance(image, str) or not image.strip():
            return "control_net_settings[0].control_image is required"
    return None


def _validate_config(config: Any) -> str | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        return "config must be an object"
    if config.get("service_mode", "") not in SERVICE_MODES:
        return f"config.service_mode must be public or private, got {config['service_mode']!r}"
    webhook = config.get("webhook_config")
    if webhook is None:
        return None
    if not isinstance(webhook, dict):
        return "config.webhook_config must be an object"
    endpoint = webhook.get("endpoint", "")
    secret = webhook.get("secret", "")
    if not isinstance(endpoint, str) or (endpoint and not is_http_url(endpoint)):
        return f"config.webhook_config.endpoint must be an http(s) URL, got {endpoint!r}"
    if not isinstance(secret, str):
        return "config.webhook_config.secret must be a string"
    return None


def size_of(task_input: dict[str, Any]) -> tuple[int, int]:
    """The image size a task asks for: width and height, 1024 when absent."""
    # §3.3: width and height (txt2img, kontext); 1024 when absent.
    width = task_input.get("width") or DEFAULT_SIZE
    return int(width), int(task_input.get("height") or DEFAULT_SIZE)
