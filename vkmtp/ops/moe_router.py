"""Wrappers of shaders/moe_router.comp (softmax -> top-k -> renormalise, one workgroup per token) and
shaders/moe_experts_used.comp (the distinct experts of the step, for the expert mat-vec).

Variants: 'subgroup' (subgroup max/add/min inside subgroups, needs subgroup arithmetic) and 'shared'
(shared-memory trees; always available). Each token is computed by its own workgroup, so results do not
depend on how many tokens the step holds.
"""

from __future__ import annotations

from vkmtp.device import Device, Recorder, ShaderKey, View
from vkmtp.ops.row_views import power_of_two, rows_view, words_view

ROUTER_KEYS = {"shared": ShaderKey.make("moe_router.comp"),
               "subgroup": ShaderKey.make("moe_router.comp", USE_SUBGROUP=1)}
USED_KEY = ShaderKey.make("moe_experts_used.comp")
USED_BLOCK = 256
MAX_USED = 32
MAX_EXPERTS_USED_LIST = 1024
MAX_GROUPS_X = 65535


def used_list_words(n_expert: int, n_tokens: int, n_used: int) -> int:
    """uint words of the distinct-experts list: count + capacity (= min(n_expert, n_tokens * n_used))."""
    return 1 + min(n_expert, n_tokens * n_used)


class MoeRouter:
    """Records the routing of a step's tokens.

    Args:
        device: the Device.
        n_expert: experts (256 for Qwen3.5/3.6 MoE).
        n_used: experts per token (8), at most 32.
        variant: 'subgroup' | 'shared'; default 'subgroup' where the device has subgroup arithmetic.
        block_size: invocations per token (power of two); default the device's `caps.workgroup_size`
            (max(64, subgroup size)).
    """

    def __init__(self, device: Device, n_expert: int = 256, n_used: int = 8, variant: str | None = None,
                 block_size: int | None = None):
        info = device.info
        if not 1 <= n_used <= min(MAX_USED, n_expert):
            raise ValueError(f"moe_router: n_used {n_used} must be in "
                             f"1..min({MAX_USED}, n_expert={n_expert})")
        variant = variant or ("subgroup" if info.has_subgroup_arithmetic else "shared")
        if variant not in ROUTER_KEYS:
            raise ValueError(f"moe_router: unknown variant {variant!r} (one of {sorted(ROUTER_KEYS)})")
        if variant == "subgroup" and not info.has_subgroup_arithmetic:
            raise ValueError(f"moe_router: {info.name} has no subgroup arithmetic; use variant='shared'")
        block_size = block_size or device.caps.workgroup_size
        if not power_of_two(block_size) or block_size > info.max_workgroup_invocations:
            raise ValueError(f"moe_router: block_size {block_size} must be a power of two <= "
                             f"{info.max_workgroup_invocations}")
        self.device = device
        self.n_expert = n_expert
        self.n_used = n_used
        self.variant = variant
        self.block_size = block_size
        self.spec = [block_size, -(-n_expert // block_size)]

    def record(self, rec: Recorder, logits: View, logits_stride: int, n_tokens: int, ids: View, weights: View,
               used: View | None = None) -> None:
        """Record the routing dispatch (and, with `used`, the distinct-experts list after it).

        Args:
            logits: row 0 of the router logits, [n_tokens][logits_stride] f32, n_expert used per row.
            ids: [n_tokens][n_used] uint32 output, rank order.
            weights: [n_tokens][n_used] f32 output.
            used: used_list_words(...) uint32 words: see shaders/moe_experts_used.comp for the format.
        """
        if n_tokens < 1:
            raise ValueError("moe_router: n_tokens must be >= 1")
        k = self.n_used
        ids_v = words_view(ids, n_tokens * k, "moe_router ids")
        weights_v = words_view(weights, n_tokens * k, "moe_router weights")
        reads = [rows_view(logits, n_tokens, self.n_expert, logits_stride, "moe_router logits")]
        push = [logits.word_offset, logits_stride, n_tokens, self.n_expert, k, ids.word_offset,
                weights.word_offset]
        groups = (min(n_tokens, MAX_GROUPS_X), -(-n_tokens // MAX_GROUPS_X), 1)
        rec.dispatch(ROUTER_KEYS[self.variant], [logits.buffer, ids.buffer, weights.buffer], groups,
                     push=push, spec=self.spec, reads=reads, writes=[ids_v, weights_v],
                     label=f"moe_router_{self.variant}[bs={self.block_size}]")
        if used is not None:
            self.record_used(rec, ids_v, n_tokens, used)

    def record_used(self, rec: Recorder, ids: View, n_tokens: int, used: View) -> None:
        """Record the distinct-experts list of `n_tokens` rows of ids ([n_tokens][n_used] uint32)."""
        if self.n_expert > MAX_EXPERTS_USED_LIST:
            raise ValueError(f"moe_router: the experts-used list supports <= {MAX_EXPERTS_USED_LIST} experts")
        n_entries = n_tokens * self.n_used
        capacity = used_list_words(self.n_expert, n_tokens, self.n_used) - 1
        reads = [words_view(ids, n_entries, "moe_router ids")]
        writes = [words_view(used, 1 + capacity, "moe_router used")]
        rec.dispatch(USED_KEY, [ids.buffer, used.buffer], (1, 1, 1),
                     push=[ids.word_offset, n_entries, self.n_expert, used.word_offset, capacity],
                     spec=[USED_BLOCK], reads=reads, writes=writes, label="moe_experts_used")
