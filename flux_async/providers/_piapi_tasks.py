"""PiAPI's Flux task types: what each takes, and the checks that turn a request into one.

`prepare_task` is `PiAPI.prepare`: it picks the task type and the model, checks every field
of a `GenerationRequest` against the task type's `Takes` row (providers.md 3.2, 3.3) and
returns the task's ``input`` and ``config``. Errors name the provider given as ``name``.
"""

from __future__ import annotations

from typing import Any

from .._models import GenerationRequest
from ._base import Prepared
from ._validate import (
    Ints,
    Numbers,
    OneOf,
    Takes,
    check_bool,
    check_choice,
    check_extra_keys,
    check_image,
    check_int,
    check_number,
    check_objects,
    check_prompt,
    check_request,
    check_text,
    check_url,
    invalid,
)

__all__ = [
    "ASPECT_RATIO_SIZES",
    "KONTEXT",
    "MAX_PIXELS",
    "MODELS",
    "MODEL_ALIASES",
    "TASK_TYPES",
    "prepare_task",
    "task_type_of",
]

SCHNELL = "Qubico/flux1-schnell"
DEV = "Qubico/flux1-dev"
DEV_ADVANCED = "Qubico/flux1-dev-advanced"
MODELS = (SCHNELL, DEV, DEV_ADVANCED)
MODEL_ALIASES = {"schnell": SCHNELL, "dev": DEV, "dev-advanced": DEV_ADVANCED}

MAX_PIXELS = 1_048_576
"""width * height may not exceed this (1024 * 1024), providers.md 3.3."""

ASPECT_RATIO_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
}
"""PiAPI takes sizes, not ratios: each ratio maps to the common ~1 MP FLUX/SDXL bucket.

Both sides are multiples of 64, the area is at most `MAX_PIXELS`, and the ratio is within 4%
of the one asked for.
"""

GUIDANCE_RANGE = (1.5, 5.0)
MAX_BATCH = 4
# Step caps: Kontext max 40 is documented; the others come from PiAPI's own MCP server,
# which clamps schnell to 10 and dev/dev-advanced to 40 (providers.md 3.3, [I] S13).
_MAX_STEPS = {SCHNELL: 10, DEV: 40, DEV_ADVANCED: 40}
_MAX_KONTEXT_STEPS = 40
# seed: -1 means random (Kontext default). Non-Kontext seeds are [U] (3.3); any int64 is sent.
_SEED_RANGE = (-1, 2**63 - 1)
SERVICE_MODES = ("public", "private")

_LORA_KEYS = ("lora_type", "lora_image", "lora_strength")
_CONTROL_NET_KEYS = (
    "control_type",
    "control_image",
    "control_strength",
    "return_preprocessed_image",
)
_OUTPAINT_SIDES = ("outpaint_left", "outpaint_right", "outpaint_top", "outpaint_bottom")
_CUSTOM_SETTING_KEYS = ("setting_type", *_OUTPAINT_SIDES)
# How many LoRAs / ControlNets each task type takes (providers.md 3.2).
_LORA_COUNT = {"txt2img-lora": (1, 1), "img2img-lora": (1, 1), "controlnet-lora": (0, 1)}
_CONTROL_NET_COUNT = {"controlnet-lora": (1, 1)}

KONTEXT = "kontext"
# width/height "can be used in txt2img ONLY"; the Kontext spec also takes them (3.3).
_SIZED = (1, None)
_GUIDANCE = Numbers(*GUIDANCE_RANGE, "guidance_scale")
# denoise is for the task types that start from an image (3.3: "img2img and the others").
_DENOISE = Numbers(0, 1, "denoise", low_exclusive=True)
_SEED = Ints(*_SEED_RANGE, "seed")
_BATCH = Ints(1, MAX_BATCH, "batch_size")
_ONE_IMAGE = OneOf((1,), None, f"1 (batch_size works on {SCHNELL} only)")
"""What every model but schnell takes as num_images: 1, sent as nothing."""


def _task(*, image: bool, extras: tuple[str, ...] = (), **rules: Any) -> Takes:
    # num_images and steps depend on the model too; `prepare_task` fills them in.
    keys = ("task_type", "service_mode", "negative_prompt", *extras)
    return Takes(image="image" if image else None, max_images=int(image), extras=keys, **rules)


# The task types and what each takes (providers.md 3.2, 3.3). The names are spelled again, on
# purpose, in testing/_piapi_validate.py: both sides are written from providers.md, not from
# each other (DESIGN), so a wrong name cannot pass every test.
TASK_TYPES: dict[str, Takes] = {
    "txt2img": _task(image=False, sizes=_SIZED, guidance=_GUIDANCE, seed=_SEED),
    "img2img": _task(image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED),
    "txt2img-lora": _task(image=False, guidance=_GUIDANCE, seed=_SEED, extras=("lora_settings",)),
    "img2img-lora": _task(
        image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED, extras=("lora_settings",)
    ),
    "fill-inpaint": _task(image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED),
    "fill-outpaint": _task(
        image=True,
        guidance=_GUIDANCE,
        strength=_DENOISE,
        seed=_SEED,
        extras=("custom_settings",),
    ),
    "redux-variation": _task(image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED),
    "controlnet-lora": _task(
        image=False,
        guidance=_GUIDANCE,
        seed=_SEED,
        extras=("lora_settings", "control_net_settings"),
    ),
    # The Kontext input is prompt, image, width, height, steps and seed only (3.3, [I] S13):
    # no guidance, no denoise, no negative_prompt.
    KONTEXT: Takes(
        image="image",
        max_images=1,
        sizes=_SIZED,
        steps=Ints(1, _MAX_KONTEXT_STEPS, "steps"),
        seed=_SEED,
        extras=("task_type", "service_mode"),
    ),
}
# Only flux1-dev-advanced runs LoRA, ControlNet, fill, redux and kontext (providers.md 3.2).
_ADVANCED_ONLY = frozenset(list(TASK_TYPES)[2:])
_NEEDS_IMAGE = tuple(sorted(name for name, takes in TASK_TYPES.items() if takes.image))
_TAKES_DENOISE = tuple(sorted(name for name, takes in TASK_TYPES.items() if takes.strength))
# The order PiAPI's number fields are checked in.
_NUMBER_ORDER = ("guidance", "strength", "num_images", "steps", "seed")


def prepare_task(name: str, request: GenerationRequest) -> Prepared:
    """Validate a request against PiAPI's documented Flux inputs (providers.md 3.2, 3.3).

    ``Prepared.args`` is ``{"task_type", "input", "config"?}``: the body without ``model``
    and without the webhook, which `PiAPI.build_create` adds per job.
    """
    extra = dict(request.extra)
    task_type = task_type_of(name, request, extra.pop("task_type", None))
    model = _model(name, request.model, task_type)
    takes = TASK_TYPES[task_type]
    takes = takes._replace(
        num_images=_BATCH if model == SCHNELL else _ONE_IMAGE,
        steps=takes.steps or Ints(1, _MAX_STEPS[model], "steps"),
    )
    check_extra_keys(name, extra, takes.extras, f" (for task_type {task_type})")

    data: dict[str, Any] = {"prompt": check_prompt(name, request.prompt)}
    _image(name, request.image_url, task_type, takes, data)
    _size(name, request, task_type, takes, data)

    def refused(field: str) -> str:
        if field == "guidance":
            return f"nothing: task_type {task_type} takes no guidance"
        return (
            f"nothing for task_type {task_type}; strength (denoise) is for "
            f"{', '.join(_TAKES_DENOISE)}"
        )

    check_request(name, takes, request, data, fields=_NUMBER_ORDER, refused=refused)

    if "negative_prompt" in extra:
        negative = extra["negative_prompt"]
        if not isinstance(negative, str):
            raise invalid(name, "extra['negative_prompt']", negative, "a string")
        data["negative_prompt"] = negative
    if task_type in _LORA_COUNT:
        if "lora_settings" in extra or _LORA_COUNT[task_type][0]:
            data["lora_settings"] = _lora_settings(
                name, extra.get("lora_settings"), _LORA_COUNT[task_type]
            )
    if task_type in _CONTROL_NET_COUNT:
        data["control_net_settings"] = _control_net_settings(
            name, extra.get("control_net_settings"), _CONTROL_NET_COUNT[task_type]
        )
    if task_type == "fill-outpaint":
        data["custom_settings"] = _custom_settings(name, extra.get("custom_settings"))

    args: dict[str, Any] = {"task_type": task_type, "input": data}
    if "service_mode" in extra:
        field = "extra['service_mode']"
        mode = check_choice(name, field, extra["service_mode"], SERVICE_MODES)
        args["config"] = {"service_mode": mode}
    return Prepared(model=model, args=args)


def task_type_of(name: str, request: GenerationRequest, value: Any) -> str:
    """Return the task type ``extra['task_type']`` (``value``) names, else the default."""
    if value is None:
        return "txt2img" if request.image_url is None else "img2img"
    return str(check_choice(name, "extra['task_type']", value, TASK_TYPES))


def _model(name: str, value: str | None, task_type: str) -> str:
    if value is None:
        return DEV_ADVANCED if task_type in _ADVANCED_ONLY else DEV
    model = MODEL_ALIASES.get(value, value) if isinstance(value, str) else value
    if model not in MODELS:
        allowed = f"{', '.join(MODELS)} (or {', '.join(MODEL_ALIASES)})"
        raise invalid(name, "model", value, allowed)
    if task_type in _ADVANCED_ONLY and model != DEV_ADVANCED:
        allowed = f"{DEV_ADVANCED} (the only model that runs task_type {task_type})"
        raise invalid(name, "model", value, allowed)
    return str(model)


def _image(
    name: str, image_url: str | None, task_type: str, takes: Takes, data: dict[str, Any]
) -> None:
    if takes.image is not None:
        if image_url is None:
            allowed = f"an http(s) URL (task_type {task_type} needs an image)"
            raise invalid(name, "image_url", None, allowed)
        inline = "base64" if task_type == KONTEXT else None
        data[takes.image] = check_image(name, "image_url", image_url, inline)
    elif image_url is not None:
        allowed = f"no image for task_type {task_type}; these take one: {', '.join(_NEEDS_IMAGE)}"
        raise invalid(name, "image_url", image_url, allowed)


def _size(
    name: str, request: GenerationRequest, task_type: str, takes: Takes, data: dict[str, Any]
) -> None:
    sized = request.width is not None or request.height is not None
    if not sized and request.aspect_ratio is None:
        return
    if takes.sizes is None:
        field = "width/height" if sized else "aspect_ratio"
        value = f"{request.width}x{request.height}" if sized else request.aspect_ratio
        allowed = (
            f"nothing: PiAPI takes sizes for task_type txt2img and kontext only, not {task_type}"
        )
        raise invalid(name, field, value, allowed)
    if sized:
        if request.aspect_ratio is not None:
            allowed = "aspect_ratio or width/height, not both"
            raise invalid(name, "aspect_ratio", request.aspect_ratio, allowed)
        width = check_int(name, "width", request.width, *takes.sizes)
        height = check_int(name, "height", request.height, *takes.sizes)
        if width * height > MAX_PIXELS:
            allowed = f"width * height <= {MAX_PIXELS:,} (e.g. 1024x1024)"
            raise invalid(name, "width/height", f"{width}x{height}", allowed)
    else:
        ratio = check_choice(name, "aspect_ratio", request.aspect_ratio, ASPECT_RATIO_SIZES)
        width, height = ASPECT_RATIO_SIZES[ratio]
    data["width"] = width
    data["height"] = height


def _lora_settings(name: str, value: Any, count: tuple[int, int]) -> list[dict[str, Any]]:
    shape = "{lora_type, lora_image?, lora_strength?}"
    settings = []
    for where, item in check_objects(
        name, "extra['lora_settings']", value, count, _LORA_KEYS, shape
    ):
        lora_type = item.get("lora_type")
        hint = "a LoRA name such as 'mjv6' or 'realism'"
        setting: dict[str, Any] = {
            "lora_type": check_text(name, f"{where}['lora_type']", lora_type, hint)
        }
        if "lora_image" in item:
            setting["lora_image"] = check_url(name, f"{where}['lora_image']", item["lora_image"])
        if "lora_strength" in item:
            # The range is not documented (providers.md 3.3): any finite number.
            field = f"{where}['lora_strength']"
            setting["lora_strength"] = check_number(name, field, item["lora_strength"])
        settings.append(setting)
    return settings


def _control_net_settings(name: str, value: Any, count: tuple[int, int]) -> list[dict[str, Any]]:
    shape = "{control_type, control_image, control_strength?, return_preprocessed_image?}"
    settings = []
    for where, item in check_objects(
        name, "extra['control_net_settings']", value, count, _CONTROL_NET_KEYS, shape
    ):
        # control_type names live on a separate page (depth, canny, soft_edge, openpose,
        # ...); only the shape is checked so a newly added type is not refused.
        hint = "a ControlNet name such as 'depth' or 'canny'"
        control_type = check_text(name, f"{where}['control_type']", item.get("control_type"), hint)
        setting: dict[str, Any] = {
            "control_type": control_type,
            "control_image": check_url(
                name, f"{where}['control_image']", item.get("control_image")
            ),
        }
        if "control_strength" in item:
            field = f"{where}['control_strength']"
            setting["control_strength"] = check_number(name, field, item["control_strength"])
        if "return_preprocessed_image" in item:
            flag = item["return_preprocessed_image"]
            field = f"{where}['return_preprocessed_image']"
            setting["return_preprocessed_image"] = check_bool(name, field, flag)
        settings.append(setting)
    return settings


def _custom_settings(name: str, value: Any) -> list[dict[str, Any]]:
    shape = "{setting_type: 'outpaint', outpaint_left/right/top/bottom?}"
    settings = []
    # The doc's example sends one entry; no maximum is documented.
    for where, item in check_objects(
        name, "extra['custom_settings']", value, (1, 16), _CUSTOM_SETTING_KEYS, shape
    ):
        field = f"{where}['setting_type']"
        setting = {
            "setting_type": check_choice(name, field, item.get("setting_type"), ("outpaint",))
        }
        # "The total delta pixel size should be less than 1024*1024" is ambiguous without
        # the input image's size, so it is left to PiAPI.
        for side in _OUTPAINT_SIDES:
            if side in item:
                setting[side] = check_int(name, f"{where}[{side!r}]", item[side], 0)
        settings.append(setting)
    return settings
