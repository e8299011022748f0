"""Speculative decoding with the model's own MTP head: settings, the step rules, verifier, statistics."""

from vkmtp.spec.config import DRAFT_TOP_K, SpecConfig, SpecOverride
from vkmtp.spec.stats import SpecStats

__all__ = ["DRAFT_TOP_K", "SpecConfig", "SpecOverride", "SpecStats"]
