"""The host-RAM prompt cache's policy (vkmtp.engine.host_cache): llama.cpp's --cache-ram meaning, the image with the
longest reuse, LRU eviction within the byte bound."""

from __future__ import annotations

import numpy as np
import pytest

from vkmtp.engine.host_cache import HostPromptCache, SlotImage, cache_ram_bytes


def _image(tokens, nbytes=1000, checkpoints=()):
    return SlotImage(list(tokens), list(tokens), list(checkpoints), {"state": np.zeros(nbytes, np.uint8)})


def test_cache_ram_meaning():
    assert cache_ram_bytes(8192) == 8192 * 2**20
    assert cache_ram_bytes(-1) is None            # no limit
    assert not HostPromptCache(cache_ram_bytes(0)).enabled
    with pytest.raises(ValueError, match="--cache-ram"):
        cache_ram_bytes(-2)


def test_longest_reuse_wins_and_leaves_the_cache():
    cache = HostPromptCache(None)
    short, long = _image([1, 2, 3]), _image([1, 2, 3, 4, 5])
    assert cache.put(short) and cache.put(long)
    image, n = cache.best([1, 2, 3, 4, 5, 6])
    assert image is long and n == 5
    # live memory longer than the prompt allows: the checkpoint before it serves (one token is left to evaluate)
    assert _image([7, 8, 9, 10], checkpoints=[2, 3]).reusable([7, 8, 9, 10]) == 3
    assert cache.best([9, 9])[0] is None
    cache.take(long)
    assert cache.images == [short] and cache.n_restored == 1


def test_lru_eviction_within_the_bound():
    cache = HostPromptCache(2500)
    images = [_image([i, i + 1], 1000) for i in range(3)]
    for image in images:
        assert cache.put(image)
    assert cache.images == images[1:] and cache.n_evicted == 1 and cache.nbytes <= 2500
    assert not cache.put(_image([5, 6], 3000))   # larger than the bound: not kept, nothing evicted for it
    assert cache.images == images[1:]
