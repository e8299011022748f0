"""Prompt reuse for hybrid models: which cached memory a new prompt starts from, and where checkpoints are taken.

A Gated DeltaNet state cannot be cut back to an earlier position, so a slot keeps *checkpoints*: copies of its
recurrent (GDN + conv) states, and the MTP head's pending hidden, taken while a prompt is processed — after every
prompt chunk, which includes the end of the prompt and the position one token before it (the last prompt token is
evaluated in a chunk of its own, so an identical prompt re-uses all but that token). Attention KV needs no copy: a
restored checkpoint at position p keeps KV rows below p, and the rows above are overwritten as the new prompt is
evaluated (attention is causal by position). A new prompt starts from the slot's live memory when that memory is a
prefix of it, else from the latest checkpoint at or before the longest common prefix. Both engines follow this
policy (vkmtp/engine/vulkan.py on the GPU, vkmtp/engine/reference.py in NumPy), so they reuse the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CTX_CHECKPOINTS = 8   # --ctx-checkpoints: llama.cpp's default


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def next_chunk(n_done: int, n_prompt: int, ubatch: int, checkpoints: bool) -> int:
    """Tokens of the next prompt chunk. With checkpoints the last prompt token is a chunk of its own, so the
    chunk before it ends one token before the end of the prompt (a checkpoint there)."""
    n = min(ubatch, n_prompt - n_done)
    if checkpoints and n > 1 and n_done + n == n_prompt:
        n -= 1
    return n


@dataclass
class Checkpoints:
    """A slot's checkpoints: positions in `tokens` (the token history they are prefixes of), each in one of
    `capacity` storage places. When all places are used, the checkpoint nearest the start is dropped."""

    capacity: int
    tokens: list[int] = field(default_factory=list)
    entries: dict[int, int] = field(default_factory=dict)   # position -> storage place

    def best(self, limit: int) -> tuple[int, int] | None:
        """(position, place) of the latest checkpoint at or before `limit`."""
        positions = [p for p in self.entries if p <= limit]
        if not positions:
            return None
        p = max(positions)
        return p, self.entries[p]

    def truncate(self, n: int) -> None:
        """Forget every checkpoint after position n and the history after it (memory is cut back to n)."""
        self.entries = {p: i for p, i in self.entries.items() if p <= n}
        del self.tokens[n:]

    def clear(self) -> None:
        self.entries = {}
        self.tokens = []

    def add(self, tokens: list[int]) -> int | None:
        """Take a checkpoint after `tokens` (the slot's memory now): the storage place to copy it into, or None
        when there is no room (capacity 0) or one is already at that position."""
        pos = len(tokens)
        if self.capacity <= 0 or pos == 0 or pos in self.entries:
            return None
        used = set(self.entries.values())
        free = [i for i in range(self.capacity) if i not in used]
        if free:
            place = free[0]
        else:
            oldest = min(self.entries)
            place = self.entries.pop(oldest)
        self.entries[pos] = place
        self.tokens = list(tokens)
        return place


@dataclass(frozen=True)
class Reuse:
    """Where a new prompt starts: `n` tokens of memory, from the live memory (place None) or a checkpoint."""

    n: int
    place: int | None = None


def plan_reuse(live: list[int], checkpoints: Checkpoints, prompt: list[int]) -> Reuse:
    """The most tokens of `prompt` the slot's memory can give while leaving at least one to evaluate: its live
    memory (tokens `live`) when that is a prefix of the prompt, else its best checkpoint."""
    limit = len(prompt) - 1
    n_live = len(live) if live and len(live) <= limit and common_prefix(live, prompt) == len(live) else 0
    best = checkpoints.best(min(limit, common_prefix(checkpoints.tokens, prompt)))
    if best is not None and best[0] > n_live:
        return Reuse(best[0], best[1])
    return Reuse(n_live)
