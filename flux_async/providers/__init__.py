"""Provider adapters: sans-IO translation between `GenerationRequest` and each wire format."""

from ._base import Provider
from .aimlapi import AIMLAPI
from .piapi import PiAPI
from .shortapi import ShortAPI

__all__ = ["AIMLAPI", "PiAPI", "Provider", "ShortAPI"]
