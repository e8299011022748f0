"""Host-RAM prompt cache (--cache-ram): slot images taken off the device when a slot changes conversation, LRU.

A *slot image* is everything a slot's prompt cache holds, as host arrays: the tokens of its live memory and that
memory (attention KV rows of those positions, GDN/conv states, the MTP head's KV rows and pending hidden), and its
checkpoints (recurrent states at earlier positions of its last prompt). It is engine-specific only in the names
and layout of its arrays; which image a prompt restores, and when a slot's memory is moved out, is decided here
for both engines (vkmtp/engine/base.py calls it).

llama-server's --cache-ram meaning: a bound in MiB (default 8192), -1 no bound, 0 no host cache. When a new
prompt would keep less than half of a slot's memory (llama-server's rule for "another conversation"), the slot's
image moves here; a prompt that shares a longer prefix with a cached image than with its slot's own memory gets
that image back (the one with the longest reuse; ties: the most recent) and the image leaves the cache. Eviction:
least recently stored first, until the images fit the bound; an image larger than the bound is not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vkmtp.engine.prompt_cache import Checkpoints, plan_reuse

DEFAULT_CACHE_RAM_MIB = 8192   # --cache-ram: llama.cpp's default
KEEP_FRACTION = 0.5            # a prompt keeping less than this of a slot's memory starts another conversation


def cache_ram_bytes(mib: int) -> int | None:
    """--cache-ram MiB as a byte bound (None: no bound; 0: no host cache)."""
    if mib < -1:
        raise ValueError(f"--cache-ram {mib}: MiB >= 0 (0: no host prompt cache), or -1 for no limit")
    return None if mib == -1 else mib * 2**20


@dataclass(eq=False)
class SlotImage:
    """A slot's prompt cache as host arrays. `tokens`: the live memory's tokens; `history`: the prompt the
    checkpoints are prefixes of, `checkpoints` their positions; `arrays`: the engine's named state arrays."""

    tokens: list[int]
    history: list[int]
    checkpoints: list[int]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values()) + 4 * (len(self.tokens) + len(self.history))

    @property
    def n_tokens(self) -> int:
        """Tokens the image holds (its live memory or its latest checkpoint, whichever is longer)."""
        return max([len(self.tokens), *self.checkpoints])

    def reusable(self, prompt: list[int]) -> int:
        """Prompt tokens this image gives, by the slot policy (vkmtp.engine.prompt_cache.plan_reuse)."""
        ckpts = Checkpoints(len(self.checkpoints), list(self.history), {p: i for i, p in enumerate(self.checkpoints)})
        return plan_reuse(self.tokens, ckpts, prompt).n


class HostPromptCache:
    """Slot images in host memory, least recently stored first, within `limit` bytes (None: no bound)."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.images: list[SlotImage] = []
        self.n_restored = 0   # images given back to a slot
        self.n_evicted = 0

    @property
    def enabled(self) -> bool:
        return self.limit is None or self.limit > 0

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.images)

    def best(self, prompt: list[int]) -> tuple[SlotImage | None, int]:
        """The image that gives the most of `prompt` (the most recent on a tie) and how much."""
        best, n_best = None, 0
        for image in self.images:
            n = image.reusable(prompt)
            if n > 0 and n >= n_best:
                best, n_best = image, n
        return best, n_best

    def take(self, image: SlotImage) -> SlotImage:
        self.images.remove(image)
        self.n_restored += 1
        return image

    def put(self, image: SlotImage) -> bool:
        """Keep an image, evicting the oldest ones until everything fits; False when it cannot be kept."""
        if not self.enabled or image.n_tokens == 0 or (self.limit is not None and image.nbytes > self.limit):
            return False
        self.images.append(image)
        while self.limit is not None and self.nbytes > self.limit:
            self.images.pop(0)
            self.n_evicted += 1
        return True

    def clear(self) -> None:
        self.images = []
