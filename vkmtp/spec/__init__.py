"""Speculative decoding with the model's own MTP head: configuration, verifier, statistics."""

from vkmtp.spec.config import SpecConfig
from vkmtp.spec.stats import SpecStats

__all__ = ["SpecConfig", "SpecStats"]
