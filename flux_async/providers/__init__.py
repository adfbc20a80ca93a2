"""Provider adapters: sans-IO translation between `GenerationRequest` and each wire format."""

from ._base import Provider
from .shortapi import ShortAPI

__all__ = ["Provider", "ShortAPI"]
