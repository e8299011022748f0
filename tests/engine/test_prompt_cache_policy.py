"""The prompt-reuse policy both engines follow (vkmtp/engine/prompt_cache.py): where chunks end, which memory a
new prompt starts from, and how the checkpoint places are bounded."""

from __future__ import annotations

from vkmtp.engine.prompt_cache import Checkpoints, Reuse, common_prefix, next_chunk, plan_reuse


def test_the_last_prompt_token_is_a_chunk_of_its_own():
    chunks, done = [], 0
    while done < 21:
        n = next_chunk(done, 21, 8, True)
        chunks.append(n)
        done += n
    assert chunks == [8, 8, 4, 1]
    assert next_chunk(0, 21, 8, False) == 8 and next_chunk(16, 21, 8, False) == 5
    assert next_chunk(0, 1, 8, True) == 1


def test_checkpoints_are_bounded_and_the_earliest_goes_first():
    ck = Checkpoints(3)
    tokens = list(range(100, 140))
    places = [ck.add(tokens[:n]) for n in (8, 16, 24, 32)]
    assert places == [0, 1, 2, 0]                 # the fourth reuses the place of position 8
    assert sorted(ck.entries) == [16, 24, 32]
    assert ck.add(tokens[:32]) is None             # one at that position already
    assert Checkpoints(0).add(tokens[:8]) is None  # --ctx-checkpoints 0
    ck.truncate(20)
    assert sorted(ck.entries) == [16] and ck.tokens == tokens[:20]


def test_reuse_prefers_the_live_memory_then_the_latest_checkpoint_before_the_difference():
    ck = Checkpoints(8)
    history = list(range(200, 240))
    for n in (8, 16, 24, 39, 40):
        ck.add(history[:n])
    live = history + [1, 2, 3]                   # prompt + generated tokens
    assert plan_reuse(live, ck, live + [4]) == Reuse(len(live))          # the next turn extends the live memory
    edited = history[:20] + [7] + history[21:]   # a change inside the history
    assert plan_reuse(live, ck, edited) == Reuse(16, ck.entries[16])
    dropped = history + [9, 9]                   # the template dropped the generated thinking
    assert plan_reuse(live, ck, dropped) == Reuse(40, ck.entries[40])
    assert plan_reuse(live, ck, history) == Reuse(39, ck.entries[39])  # identical prompt: one token to evaluate
    assert plan_reuse(live, ck, [5, 6]) == Reuse(0)
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
