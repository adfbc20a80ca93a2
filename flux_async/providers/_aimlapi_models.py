"""AI/ML API's FLUX models: what each takes, and the checks that turn a request into a body.

`MODELS` holds one `Takes` row per model id (providers.md 2.2, from the per-model OpenAPI
files). `prepare_model` is `AIMLAPI.prepare`: it picks the model, checks every field of a
`GenerationRequest` against its row, maps sizes onto the model's ``image_size`` presets or
``aspect_ratio`` enum and returns the body's arguments. Errors name the provider given as
``name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._models import GenerationRequest
from ._base import Prepared
from ._validate import (
    Ints,
    Numbers,
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
    "ASPECT_RATIOS",
    "ASPECT_RATIO_PRESETS",
    "MODELS",
    "PROMPT_MAX_LENGTH",
    "SIZE_PRESETS",
    "model_of",
    "prepare_model",
]

PROMPT_MAX_LENGTH = 4000
SIZE_PRESETS = (
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
)
ASPECT_RATIO_PRESETS = {
    "1:1": "square_hd",
    "4:3": "landscape_4_3",
    "16:9": "landscape_16_9",
    "3:4": "portrait_4_3",
    "9:16": "portrait_16_9",
}
"""How ``aspect_ratio`` maps onto ``image_size`` presets, for models that take image_size."""
ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
"""The ``aspect_ratio`` enum of flux-pro/v1.1-ultra and the Kontext models."""
SIZE_STEP = 32
NUM_IMAGES = (1, 4)
SAFETY_TOLERANCES = ("1", "2", "3", "4", "5", "6")
ACCELERATIONS = ("none", "regular", "high")
_FLUX1_FORMATS = ("jpeg", "png")
_FLUX2_FORMATS = ("jpeg", "png", "webp")
_MAX_LORAS = 3
_LORA_SCALE = (0.0, 4.0)


def _takes(
    *,
    image: str | None = None,
    max_images: int = 0,
    sizes: tuple[int, int] | None = None,
    aspect_ratio: bool = False,
    guidance: Numbers | None = None,
    steps: Ints | None = None,
    strength: bool = False,
    output_formats: tuple[str, ...] = (),
    extras: frozenset[str] = frozenset(),
) -> Takes:
    """Return what one model id takes (providers.md 2.2, from the per-model OpenAPI files, S4).

    Args:
        image: ``image_url`` or ``image_urls``: where reference images go.
        sizes: bounds of ``image_size`` width and height.
        aspect_ratio: takes ``aspect_ratio`` from `ASPECT_RATIOS` (and no image_size).
        extras: provider-specific keys taken through ``extra`` (besides image_size,
            output_format and image_urls, which follow from the other arguments).
    """
    keys = sorted(extras)
    if sizes is not None:
        keys.append("image_size")
    if output_formats:
        keys.append("output_format")
    if max_images > 1:
        keys.append("image_urls")
    return Takes(
        image=image,
        max_images=max_images,
        sizes=sizes,
        aspect_ratios=ASPECT_RATIOS if aspect_ratio else (),
        # Common to every model (2.2): num_images 1-4, seed >= 1.
        num_images=Ints(*NUM_IMAGES, "num_images"),
        seed=Ints(1, None, "seed"),
        guidance=guidance,
        steps=steps,
        # srpo/image-to-image documents 0-1; flux/dev/image-to-image gives no range.
        strength=Numbers(0, 1, "strength") if strength else None,
        output_formats=output_formats,
        extras=tuple(keys),
    )


_SAFETY = frozenset({"enable_safety_checker"})
_TOLERANCE = frozenset({"safety_tolerance"})
_SRPO = frozenset({"enable_safety_checker", "sync_mode", "acceleration"})
_FLUX2 = frozenset({"enable_safety_checker", "enable_prompt_expansion", "acceleration"})
_FLUX2_PRO = frozenset({"enable_safety_checker", "safety_tolerance"})
_GUIDANCE = Numbers(1.0, 20.0, "guidance_scale")
_STEPS = Ints(1, 50, "num_inference_steps")

_KONTEXT: dict[str, Any] = {
    "aspect_ratio": True,
    "guidance": _GUIDANCE,
    "output_formats": _FLUX1_FORMATS,
    "extras": _TOLERANCE,
}
_FLUX2_BASE: dict[str, Any] = {
    "sizes": (512, 2048),
    "guidance": Numbers(0.0, 20.0, "guidance_scale"),
    "steps": Ints(4, 50, "num_inference_steps"),
    "output_formats": _FLUX2_FORMATS,
    "extras": _FLUX2,
}
_FLUX2_PRO_BASE: dict[str, Any] = {
    "sizes": (512, 2048),
    "output_formats": _FLUX2_FORMATS,
    "extras": _FLUX2_PRO,
}
_EDIT: dict[str, Any] = {"image": "image_urls", "max_images": 3}

MODELS: dict[str, Takes] = {
    # flux/schnell's step maximum is not given at the docs' HEAD (2.2); older versions said 12.
    "flux/schnell": _takes(
        sizes=(64, 1536), steps=Ints(1, None, "num_inference_steps"), extras=_SAFETY
    ),
    "flux/dev": _takes(sizes=(512, 1536), guidance=_GUIDANCE, steps=_STEPS, extras=_SAFETY),
    "flux/dev/image-to-image": _takes(
        image="image_url",
        max_images=1,
        guidance=_GUIDANCE,
        steps=_STEPS,
        strength=True,
        extras=_SAFETY,
    ),
    "flux-pro": _takes(
        sizes=(256, 1440),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_TOLERANCE,
    ),
    "flux-pro/v1.1": _takes(
        sizes=(256, 1440), output_formats=_FLUX1_FORMATS, extras=_TOLERANCE | _SAFETY
    ),
    "flux-pro/v1.1-ultra": _takes(
        aspect_ratio=True,
        output_formats=_FLUX1_FORMATS,
        extras=_TOLERANCE | _SAFETY | {"raw"},
    ),
    "flux-realism": _takes(
        sizes=(512, 1536),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_SAFETY,
    ),
    "flux/kontext-pro/text-to-image": _takes(**_KONTEXT),
    "flux/kontext-max/text-to-image": _takes(**_KONTEXT),
    "flux/kontext-pro/image-to-image": _takes(**_KONTEXT, image="image_url", max_images=4),
    "flux/kontext-max/image-to-image": _takes(**_KONTEXT, image="image_url", max_images=4),
    "flux/srpo": _takes(
        sizes=(512, 1536),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_SRPO,
    ),
    "flux/srpo/image-to-image": _takes(
        image="image_url",
        max_images=1,
        guidance=_GUIDANCE,
        steps=_STEPS,
        strength=True,
        output_formats=_FLUX1_FORMATS,
        extras=_SRPO,
    ),
    "blackforestlabs/flux-2": _takes(**_FLUX2_BASE),
    "blackforestlabs/flux-2-lora": _takes(**{**_FLUX2_BASE, "extras": _FLUX2 | {"loras"}}),
    "blackforestlabs/flux-2-pro": _takes(**_FLUX2_PRO_BASE),
    "blackforestlabs/flux-2-max": _takes(**_FLUX2_PRO_BASE),
    "blackforestlabs/flux-2-edit": _takes(**_FLUX2_BASE, **_EDIT),
    # The lora-edit schema spells the field "loars"; "loras" (as on flux-2-lora) is sent.
    "blackforestlabs/flux-2-lora-edit": _takes(
        **{**_FLUX2_BASE, "extras": _FLUX2 | {"loras"}}, **_EDIT
    ),
    "blackforestlabs/flux-2-pro-edit": _takes(**_FLUX2_PRO_BASE, **_EDIT),
}
TEXT_TO_IMAGE = "flux/dev"
IMAGE_TO_IMAGE = "flux/dev/image-to-image"
_ALIASES = {"schnell": ("flux/schnell", None), "dev": (TEXT_TO_IMAGE, IMAGE_TO_IMAGE)}
_IMAGE_MODELS = tuple(model for model, takes in MODELS.items() if takes.image)


def prepare_model(name: str, request: GenerationRequest) -> Prepared:
    """Validate a request against the chosen model's OpenAPI schema (providers.md 2.2)."""
    extra = dict(request.extra)
    model = model_of(name, request)
    takes = MODELS[model]
    check_extra_keys(name, extra, takes.extras, f" (for {model})")
    args: dict[str, Any] = {
        "prompt": check_prompt(name, request.prompt, max_length=PROMPT_MAX_LENGTH)
    }
    _images(name, request.image_url, extra.pop("image_urls", None), model, takes, args)
    _size(name, request, extra.pop("image_size", None), model, takes, args)

    def refused(field: str) -> str:
        if field == "strength":
            return (
                f"nothing: {model} takes none (flux/dev/image-to-image and "
                "flux/srpo/image-to-image do)"
            )
        return f"nothing: {model} takes none"

    check_request(name, takes, request, args, refused=refused)
    for key, value in extra.items():
        args[key] = _extra_value(name, key, value, takes)
    return Prepared(model=model, args=args)


def model_of(name: str, request: GenerationRequest) -> str:
    """Return the model id ``request.model`` names (an alias picks by ``image_url``)."""
    with_image = request.image_url is not None
    if request.model is None:
        return IMAGE_TO_IMAGE if with_image else TEXT_TO_IMAGE
    if request.model in _ALIASES:
        text_model, image_model = _ALIASES[request.model]
        if not with_image:
            return text_model
        if image_model is None:
            allowed = f"no image for {text_model}; image models: {', '.join(_IMAGE_MODELS)}"
            raise invalid(name, "image_url", request.image_url, allowed)
        return image_model
    if request.model not in MODELS:
        allowed = f"{', '.join(MODELS)} (or {', '.join(_ALIASES)})"
        raise invalid(name, "model", request.model, allowed)
    return request.model


def _images(
    name: str, image_url: str | None, more: Any, model: str, takes: Takes, args: dict[str, Any]
) -> None:
    urls: list[str] = []
    if image_url is not None:
        if takes.image is None:
            allowed = f"no image for {model}; image models: {', '.join(_IMAGE_MODELS)}"
            raise invalid(name, "image_url", image_url, allowed)
        inline = "data_url" if takes.image == "image_urls" else None
        urls.append(check_image(name, "image_url", image_url, inline))
    if more is not None:
        if not isinstance(more, (list, tuple)) or not more:
            raise invalid(name, "extra['image_urls']", more, "a non-empty list of URLs")
        urls.extend(
            check_url(name, f"extra['image_urls'][{index}]", url) for index, url in enumerate(more)
        )
    if takes.image is None:
        return
    if not urls:
        raise invalid(name, "image_url", None, f"an http(s) URL (required by {model})")
    if len(urls) > takes.max_images:
        allowed = f"at most {takes.max_images} images in all for {model}, image_url included"
        raise invalid(name, "extra['image_urls']", more, allowed)
    if takes.image == "image_urls":
        args["image_urls"] = urls
    else:
        # Kontext image-to-image takes a uri or a list of up to 4 (2.2).
        args["image_url"] = urls[0] if len(urls) == 1 else urls


def _size(
    name: str,
    request: GenerationRequest,
    image_size: Any,
    model: str,
    takes: Takes,
    args: dict[str, Any],
) -> None:
    sized = request.width is not None or request.height is not None
    values = {
        "extra['image_size']": image_size,
        "width/height": f"{request.width}x{request.height}" if sized else None,
        "aspect_ratio": request.aspect_ratio,
    }
    given = [field for field, value in values.items() if value is not None]
    if not given:
        return
    if len(given) > 1:
        raise invalid(name, given[-1], values[given[-1]], f"only one of {', '.join(given)}")
    if takes.aspect_ratios:
        if request.aspect_ratio is None:
            allowed = f"aspect_ratio ({', '.join(ASPECT_RATIOS)}): {model} takes no image_size"
            raise invalid(name, given[0], values[given[0]], allowed)
        ratio = check_choice(name, "aspect_ratio", request.aspect_ratio, takes.aspect_ratios)
        args["aspect_ratio"] = ratio
        return
    sizes = takes.sizes
    if sizes is None:
        allowed = f"nothing: {model} makes an image the size of its input image"
        raise invalid(name, given[0], values[given[0]], allowed)
    if request.aspect_ratio is not None:
        if request.aspect_ratio not in ASPECT_RATIO_PRESETS:
            allowed = (
                f"{', '.join(ASPECT_RATIO_PRESETS)} (the image_size presets of {model}), "
                "or width/height"
            )
            raise invalid(name, "aspect_ratio", request.aspect_ratio, allowed)
        args["image_size"] = ASPECT_RATIO_PRESETS[request.aspect_ratio]
    elif sized:
        args["image_size"] = _dimensions(name, "", request.width, request.height, sizes)
    elif isinstance(image_size, str):
        field = "extra['image_size']"
        args["image_size"] = check_choice(name, field, image_size, SIZE_PRESETS)
    elif isinstance(image_size, Mapping) and set(image_size) <= {"width", "height"}:
        width, height = image_size.get("width"), image_size.get("height")
        args["image_size"] = _dimensions(name, "extra['image_size']", width, height, sizes)
    else:
        allowed = f"one of {', '.join(SIZE_PRESETS)} or {{'width': w, 'height': h}}"
        raise invalid(name, "extra['image_size']", image_size, allowed)


def _dimensions(
    name: str, prefix: str, width: Any, height: Any, bounds: tuple[int, int | None]
) -> dict[str, int]:
    low, high = bounds
    sides = {}
    for side_name, value in (("width", width), ("height", height)):
        field = f"{prefix}[{side_name!r}]" if prefix else side_name
        side = check_int(name, field, value, low, high)
        if side % SIZE_STEP:
            raise invalid(name, field, value, f"a multiple of {SIZE_STEP} in [{low}, {high}]")
        sides[side_name] = side
    return sides


def _extra_value(name: str, key: str, value: Any, takes: Takes) -> Any:
    field = f"extra[{key!r}]"
    if key in ("enable_safety_checker", "sync_mode", "enable_prompt_expansion", "raw"):
        # raw's schema enum is [false] (2.2); true is passed on and left to the provider.
        # What sync_mode=false returns is [U] (2.5).
        return check_bool(name, field, value)
    if key == "safety_tolerance":
        # A string "1"-"6" on the wire (2.2); an int is accepted and converted.
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        return check_choice(name, field, text, SAFETY_TOLERANCES)
    if key == "output_format":
        return check_choice(name, field, value, takes.output_formats)
    if key == "acceleration":
        return check_choice(name, field, value, ACCELERATIONS)
    assert key == "loras"
    return _loras(name, value)


def _loras(name: str, value: Any) -> list[dict[str, Any]]:
    loras = []
    count, keys = (0, _MAX_LORAS), ("path", "scale")
    for where, item in check_objects(name, "extra['loras']", value, count, keys, "{path, scale?}"):
        hint = "a URL or a HuggingFace repo id (owner/repo)"
        lora: dict[str, Any] = {
            "path": check_text(name, f"{where}['path']", item.get("path"), hint)
        }
        if "scale" in item:
            field = f"{where}['scale']"
            lora["scale"] = check_number(name, field, item["scale"], *_LORA_SCALE)
        loras.append(lora)
    return loras
