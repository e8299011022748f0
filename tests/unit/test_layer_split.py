"""The layer split follows llama.cpp's --tensor-split rule: contiguous blocks per device, cut where the cumulative
proportions cross i / (blocks + 1); the heads are on the last device; bad splits are refused naming the flag."""

from __future__ import annotations

import pytest

from vkmtp.graph.layer_split import SplitError, parse_tensor_split, proportions_from_free, split_layers


def ranges(split):
    return [(d.name, d.first, d.count, d.heads) for d in split]


def test_llama_cpp_rule_on_a_27b_like_model():
    # 64 trunk blocks + 1 MTP block in the file: 66 "layers" with the output layer; 3,1 cuts at 0.75 * 66 = 49.5
    assert ranges(split_layers(65, 64, (3.0, 1.0), ["Vulkan0", "Vulkan1"])) == \
        [("Vulkan0", 0, 50, False), ("Vulkan1", 50, 14, True)]
    # 1,1: i / 66 < 0.5 for i < 33
    assert ranges(split_layers(65, 64, (1.0, 1.0), ["Vulkan0", "Vulkan1"])) == \
        [("Vulkan0", 0, 33, False), ("Vulkan1", 33, 31, True)]
    # three 3060s: cuts at 22 and 44
    assert ranges(split_layers(65, 64, (12.0, 12.0, 12.0), ["Vulkan0", "Vulkan1", "Vulkan2"])) == \
        [("Vulkan0", 0, 22, False), ("Vulkan1", 22, 22, False), ("Vulkan2", 44, 20, True)]
    # proportions, not sizes: 24,12 is 2,1
    assert split_layers(65, 64, (24.0, 12.0), ["a", "b"]) == split_layers(65, 64, (2.0, 1.0), ["a", "b"])


def test_every_block_is_on_exactly_one_device_in_order():
    for shares in ((1.0, 1.0), (3.0, 1.0), (1.0, 3.0), (5.0, 2.0, 1.0), (1.0, 1.0, 1.0, 1.0)):
        split = split_layers(41, 40, shares, [f"Vulkan{i}" for i in range(len(shares))])
        blocks = [b for d in split for b in range(d.first, d.first + d.count)]
        assert blocks == list(range(40))
        assert [d.heads for d in split] == [False] * (len(shares) - 1) + [True]


def test_a_small_model_may_leave_the_last_device_only_the_heads():
    split = split_layers(5, 4, (3.0, 1.0), ["Vulkan0", "Vulkan0.1"])
    assert ranges(split) == [("Vulkan0", 0, 4, False), ("Vulkan0.1", 4, 0, True)]
    assert split[1].describe() == "Vulkan0.1: the LM head and MTP head only"
    assert split[0].describe() == "Vulkan0: blocks 0-3"


def test_a_device_before_the_last_without_blocks_is_refused():
    with pytest.raises(SplitError, match="leaves Vulkan1 without a trunk block"):
        split_layers(5, 4, (10.0, 0.01, 1.0), ["Vulkan0", "Vulkan1", "Vulkan2"])


def test_tensor_split_values():
    assert parse_tensor_split("3,1", 2) == (3.0, 1.0)
    assert parse_tensor_split("3/1", 2) == (3.0, 1.0)    # llama.cpp accepts both separators
    assert parse_tensor_split("0.6, 0.4", 2) == (0.6, 0.4)
    with pytest.raises(SplitError, match="-ts/--tensor-split 3,1: splits a model over several devices"):
        parse_tensor_split("3,1", 1)
    with pytest.raises(SplitError, match="3 proportions for 2 devices"):
        parse_tensor_split("3,1,1", 2)
    for bad in ("1,0", "-1,2", "nan,1", "inf,1"):
        with pytest.raises(SplitError, match="proportions are > 0"):
            parse_tensor_split(bad, 2)
    with pytest.raises(SplitError, match="expected proportions"):
        parse_tensor_split("3,x", 2)


def test_default_split_by_free_memory_counts_a_shared_device_once():
    assert proportions_from_free([24 << 30, 12 << 30], [0, 1]) == (24 << 30, 12 << 30)
    assert proportions_from_free([8 << 30, 8 << 30], [0, 0]) == (4 << 30, 4 << 30)
    with pytest.raises(SplitError, match="give -ts"):
        proportions_from_free([0, 0], [0, 1])
