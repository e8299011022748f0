"""The Qwen3.5 forward pass recorded on the GPU: trunk blocks, final norm, LM head and the MTP head.

Each `record_*` function appends dispatches for one step of `n` tokens to a Recorder; nothing runs until the
recorded sequence is submitted. Shapes follow vkmtp.ref (the oracle), in NumPy order, f32 activations:
  x    [n, E]  residual stream                 xn  [n, E]  normed input of a mixer / FFN
  attention projections, one [n, 2*H*D + 2*H_kv*D] matrix per step: q + gate per head | k | v
  GDN projections, one [n, conv_dim + H_v*d + 2*H_v] matrix: u (raw qkv) | z (gate of the output norm) | b | a
  c    [n, conv_dim] conv + SiLU output (q | k | v)
  o    [n, H_v*d | H*D] mixer output before its output projection
  FFN  one [n, 2F] matrix: g | u, then SiLU(g) * u in place of g
Projections that read the same input are one mat-vec / mat-mat when their weights were concatenated at load
(vkmtp.model.weights.fused_groups; `Forward.projections`), each writing its columns of the shared matrix;
their consumers read them with a row stride (Strided). `ColumnsView`s tell the recorder which columns a
dispatch touches, so disjoint columns need no barrier.
Decode and verify steps use the mat-vec kernels and one-query attention, which are batch-invariant: a token's
logits are the same bits alone or in a verify batch, so greedy output with MTP equals greedy output without
it. Prompt chunks (`Activations.prefill`) use the tiled mat-mat and tiled attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from vkmtp.device import Arena, Buffer, Device, Recorder, View
from vkmtp.device.buffers import ColumnsView
from vkmtp.gguf import GGMLType
from vkmtp.model.config import LayerKind, ModelConfig
from vkmtp.graph.device_state import DeviceState
from vkmtp.graph.memory_plan import KvLayouts
from vkmtp.graph.placement import WeightPart, WeightRef, fused_name
from vkmtp.model.weights import AttentionTensors, BlockTensors, DeltaNetTensors, DenseFfnTensors, ModelTensors
from vkmtp.ops.argmax import Argmax
from vkmtp.ops.conv1d import CausalConv1d
from vkmtp.ops.elementwise import SigmoidScaleAdd, SwiGlu
from vkmtp.ops.flash_attn import FlashAttn
from vkmtp.ops.gdn import GatedDeltaNet
from vkmtp.ops.get_rows import GetRows
from vkmtp.ops.matmul import MatMul
from vkmtp.ops.matvec import MAX_IN_HEADS, InputPrep, MatVec
from vkmtp.ops.matvec_id import ExpertPart, MatVecId, routes_words
from vkmtp.ops.moe_router import MoeRouter
from vkmtp.ops.rms_norm import RmsNorm
from vkmtp.ops.rope import Rope
from vkmtp.ops.set_rows import SetRows
from vkmtp.ops.strided import Strided
from vkmtp.ops.topk import TopK
from vkmtp.ops.token_probs import TokenProbs
from vkmtp.spec.config import DRAFT_TOP_K
from vkmtp.tuning.profile import TuningProfile



class Ops:
    """One instance of every op wrapper for a device and model (pipelines are shared through the Device).

    `tuning` (vkmtp.tuning.profile, measured by `vkmtp tune`) sets mat-vec shapes per quant type, the GDN lane
    count and variant, the decode attention's split and the prefill attention's f16 math, over the device's
    defaults (`device.caps`); None or an absent field keeps the default.
    """

    def __init__(self, device: Device, cfg: ModelConfig, layouts: KvLayouts,
                 tuning: TuningProfile | None = None):
        self.device = device
        caps = (tuning or TuningProfile()).apply(device.caps)
        self.matvec = MatVec(device, caps=caps)
        self.matmul = MatMul(device, caps=caps)
        self.get_rows = GetRows(device)
        self.norm = RmsNorm(device, eps=cfg.rms_eps)
        self.rope = Rope(device, cfg.head_dim, cfg.n_rot, cfg.rope_freq_base, eps=cfg.rms_eps)
        # V rows are written by set_rows; K rows by rope straight into the cache (its layout is the K layout)
        self.set_rows = SetRows(device, layouts.v)
        self.attn = FlashAttn(device, cfg.n_head, layouts.k, layouts.v, caps=caps)
        q_tile = FlashAttn.max_q_tile(device, cfg.n_head, cfg.n_head_kv, cfg.head_dim)
        self.attn_prefill = FlashAttn(device, cfg.n_head, layouts.k, layouts.v, q_tile=min(4, q_tile), caps=caps)
        self.set_rows_mtp = self.attn_mtp = self.attn_mtp_prefill = None
        if layouts.mtp_k is not None:
            self.set_rows_mtp = SetRows(device, layouts.mtp_v)
            self.attn_mtp = FlashAttn(device, cfg.n_head, layouts.mtp_k, layouts.mtp_v, caps=caps)
            self.attn_mtp_prefill = FlashAttn(device, cfg.n_head, layouts.mtp_k, layouts.mtp_v,
                                              q_tile=min(4, q_tile), caps=caps)
        self.conv = CausalConv1d(device, cfg.ssm_conv_kernel) if cfg.recurrent_layers else None
        self.gdn = GatedDeltaNet(device, cfg.ssm_d_state, caps=caps) if cfg.recurrent_layers else None
        self.swiglu = SwiGlu(device)
        self.sigmoid_scale_add = SigmoidScaleAdd(device)
        self.router = MoeRouter(device, cfg.n_expert, cfg.n_expert_used) if cfg.is_moe else None
        self.matvec_id = MatVecId(device) if cfg.is_moe else None
        self.argmax = Argmax(device)
        self.topk = TopK(device, DRAFT_TOP_K)
        self.token_probs = TokenProbs(device)   # requests that ask for token probabilities

    def linear(self, rec: Recorder, w: WeightRef, x: View, y: View, n: int, accumulate: bool = False,
               prefill: bool = False, x_stride: int | None = None, y_stride: int | None = None,
               prep: InputPrep | None = None, out_gate: tuple[View, int] | None = None) -> None:
        """y[n, rows] (+)= x[n, K] W^T (row strides default to K and rows). Decode and verify steps use the
        batch-invariant mat-vec (any n: it runs 8 columns per dispatch), so a token's result never depends on
        its batch; prompt chunks use the tiled mat-mat. `prep` / `out_gate` (mat-vec only): the fused input
        preparation and gated output write of vkmtp.ops.matvec."""
        rows, k = (w.shape[-2] if len(w.shape) > 1 else 1), w.shape[-1]
        xs, ys = x_stride or k, y_stride or rows
        x = x.sub(0, 4 * ((n - 1) * xs + k))
        y = y.sub(0, 4 * ((n - 1) * ys + rows))
        if prefill:
            if prep is not None or out_gate is not None:
                raise ValueError("the prefill mat-mat has no fused input preparation or gated output")
            self.matmul.record(rec, w.parts, w.ggml_type, rows, k, x, y, n, accumulate=accumulate, x_stride=xs,
                               y_stride=ys)
            return
        self.matvec.record(rec, w.parts, w.ggml_type, rows, k, x, y, n, accumulate=accumulate, x_stride=xs,
                           y_stride=ys, prep=prep, out_gate=out_gate)


@dataclass
class Activations:
    """Views for one step of n tokens, carved from the shared scratch buffer."""

    n: int
    prefill: bool  # a prompt chunk (tiled mat-mat, tiled attention) rather than a decode / verify step
    x: View
    xn: View
    mix: View      # the mixer projections: [n, qg | k | v], or [n, u | z | b | a] then c
    o: View
    f: View
    attn_scratch: View
    moe: View
    head_h: View   # [n_out, E] normed hidden of the rows that need logits
    logits: View   # [n_out, V]
    argmax_scratch: View

    @staticmethod
    def sizes(cfg: ModelConfig, n: int, n_out: int, ops: Ops, prefill: bool) -> dict[str, int]:
        e = cfg.n_embd
        attn_mix = 2 * cfg.n_head * cfg.head_dim + 2 * cfg.n_head_kv * cfg.head_dim
        gdn_mix = 2 * cfg.ssm_conv_dim + cfg.ssm_d_inner + 2 * cfg.ssm_dt_rank
        o = max(cfg.n_head * cfg.head_dim, cfg.ssm_d_inner)
        ff = 2 * cfg.n_ff if not cfg.is_moe else 2 * cfg.n_ff_shexp   # f also holds the MTP's [n, 2E] input
        moe = 0
        if cfg.is_moe:
            k = cfg.n_expert_used
            moe = cfg.n_expert + 2 * k + 2 * k * cfg.n_ff_exp + k * e + e + 1 + routes_words(n, k) // n + 1
        return {
            "x": 4 * n * e, "xn": 4 * n * e, "mix": 4 * n * max(attn_mix, gdn_mix), "o": 4 * n * o,
            "f": 4 * n * max(ff, 2 * e), "attn_scratch": (ops.attn_prefill if prefill else ops.attn).scratch_bytes(n), "moe": 4 * n * moe + 4, "head_h": 4 * n_out * e,
            "logits": 4 * n_out * cfg.n_vocab,
            "argmax_scratch": max(ops.argmax.scratch_bytes(n_out, cfg.n_vocab),
                                  ops.topk.scratch_bytes(n_out, cfg.n_vocab),
                                  ops.token_probs.scratch_bytes(n_out, cfg.n_vocab)),
        }

    @staticmethod
    def carve(buffer: Buffer, cfg: ModelConfig, n: int, n_out: int, ops: Ops, prefill: bool) -> "Activations":
        arena = Arena(buffer)
        views = {k: arena.take(v, k) for k, v in Activations.sizes(cfg, n, n_out, ops, prefill).items()}
        return Activations(n=n, prefill=prefill, **views)


def scratch_bytes_for(cfg: ModelConfig, n: int, n_out: int, ops: Ops) -> int:
    """The scratch buffer: the larger of a decode / verify step's and a prompt chunk's activations."""
    return max(Arena.size_for(list(Activations.sizes(cfg, n, n_out, ops, p).values())) for p in (False, True))


HIDDEN_ROW_SETS = 4   # post-norm trunk hidden, shifted MTP input, two MTP outputs (graph/steps.py GraphContext)


def hidden_bytes(cfg: ModelConfig, max_rows: int) -> int:
    """The hidden-rows buffer kept outside the per-pass activations (GraphContext carves it)."""
    return 4 * HIDDEN_ROW_SETS * max_rows * cfg.n_embd


class Forward:
    """Records the model's forward pass. Holds the weights on the device and the device state.

    On a stage of a layer split (vkmtp.graph.stages) it records only that device's trunk `blocks`, and a stage
    after the first takes its residual stream from `x_in` (the host-visible boundary buffer the host fills
    from the device before it) instead of the embedding."""

    def __init__(self, device: Device, cfg: ModelConfig, table: ModelTensors, weights: dict[str, WeightRef],
                 state: DeviceState, ops: Ops, blocks: range | None = None, x_in: View | None = None):
        self.device = device
        self.cfg = cfg
        self.table = table
        self.w = weights
        self.state = state
        self.ops = ops
        self.blocks = table.blocks if blocks is None else table.blocks[blocks.start: blocks.stop]
        self.x_in = x_in

    # --- helpers ----------------------------------------------------------------------------------------------
    def _vec(self, name: str) -> View:
        """A small f32 tensor (norm weights, ssm_a, dt_bias, conv kernel) as one view."""
        ref = self.w[name]
        if ref.ggml_type != GGMLType.F32:
            raise ValueError(f"{name}: expected an F32 tensor, found {GGMLType(ref.ggml_type).name}")
        return ref.single

    def norm(self, rec, x: View, w_name: str, y: View, n: int, width: int, x_stride: int | None = None,
             y_stride: int | None = None) -> None:
        xs = Strided(x.sub(0, 4 * ((n - 1) * (x_stride or width) + width)), x_stride or width, 0)
        ys = Strided(y.sub(0, 4 * ((n - 1) * (y_stride or width) + width)), y_stride or width, 0)
        self.ops.norm.record(rec, xs, self._vec(w_name), ys, n, width)

    def normed_input(self, rec: Recorder, act: Activations, w_name: str, n: int) -> tuple[View, InputPrep | None]:
        """The input of the mat-vecs that read RMSNorm(x; w_name): in a decode / verify step x itself with the
        norm folded into each of them (InputPrep "norm": no dispatch, no barrier); in a prompt chunk the norm
        recorded into act.xn for the mat-mats."""
        if act.prefill:
            self.norm(rec, act.x, w_name, act.xn, n, self.cfg.n_embd)
            return act.xn, None
        return act.x, InputPrep("norm", self._vec(w_name), self.cfg.rms_eps)

    def projections(self, rec: Recorder, names: tuple[str, ...], x: View, out: View, n: int,
                    prefill: bool, prep: InputPrep | None = None) -> int:
        """out[n, W] = x W_1^T | x W_2^T | ... for matrices reading the same x: one mat-vec / mat-mat per fused
        group (vkmtp.model.weights.fused_groups), one per remaining matrix. Returns W (out's row stride)."""
        widths = [self.w[m].n_rows for m in names]
        total = sum(widths)
        i = col = 0
        while i < len(names):
            j = len(names)
            while j > i + 1 and fused_name(names[i:j]) not in self.w:
                j -= 1
            ref = self.w[fused_name(names[i:j])]
            width = sum(widths[i:j])
            y = out.sub(4 * col, 4 * ((n - 1) * total + width))
            y = ColumnsView(y.buffer, y.offset, y.nbytes, stride=4 * total, width=4 * width)
            self.ops.linear(rec, ref, x, y, n, prefill=prefill, y_stride=total, prep=prep)
            col += width
            i = j
        return total

    # --- embedding --------------------------------------------------------------------------------------------
    def record_embed(self, rec: Recorder, records: View, n: int, out: View, table: str | None = None,
                     out_stride: int | None = None) -> None:
        ref = self.w[table or self.table.token_embd.name]
        self.ops.get_rows.record(rec, ref.parts, ref.ggml_type, ref.shape[0], self.cfg.n_embd, records, out, n,
                                 out_stride=out_stride)

    # --- blocks -----------------------------------------------------------------------------------------------
    def record_block(self, rec: Recorder, blk: BlockTensors, records: View, act: Activations, n: int,
                     n_snap: int = 0, mtp: bool = False) -> None:
        """x <- x + mixer(norm(x)); x <- x + ffn(norm(x)) for block `blk` (trunk or the MTP block)."""
        xin, prep = self.normed_input(rec, act, blk.attn_norm.name, n)
        if blk.kind is LayerKind.ATTENTION:
            self.record_attention(rec, blk.index, blk.mixer, records, act, n, mtp, xin, prep)
        else:
            self.record_delta_net(rec, blk.index, blk.mixer, records, act, n, n_snap, xin, prep)
        xin, prep = self.normed_input(rec, act, blk.ffn_norm.name, n)
        if isinstance(blk.ffn, DenseFfnTensors):
            self.record_dense_ffn(rec, blk.ffn.gate.name, blk.ffn.up.name, blk.ffn.down.name, xin, act, n,
                                  prep=prep)
        else:
            self.record_moe_ffn(rec, blk.ffn, act, n, xin, prep)

    def record_attention(self, rec: Recorder, layer: int, t: AttentionTensors, records: View,
                         act: Activations, n: int, mtp: bool, xin: View, prep: InputPrep | None) -> None:
        cfg, ops = self.cfg, self.ops
        h, hkv, d = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        qg_w, kv_w = 2 * h * d, hkv * d
        # one [n, W] matrix per token: q+gate | k | v
        w = self.projections(rec, (t.q.name, t.k.name, t.v.name), xin, act.mix, n, act.prefill, prep)

        def cols(first: int, width: int) -> View:   # columns first.. first+width-1 of every token's row
            v = act.mix.sub(4 * first, 4 * ((n - 1) * w + width))
            return ColumnsView(v.buffer, v.offset, v.nbytes, stride=4 * w, width=4 * width)

        if mtp:
            k_cache, v_cache = self.state.mtp_k.layers[0], self.state.mtp_v.layers[0]
            set_rows = ops.set_rows_mtp
            attn = ops.attn_mtp_prefill if act.prefill else ops.attn_mtp
            layout = self.state.mtp_kv_layout      # K's: rope writes K rows, set_rows (V's layout) V rows
        else:
            k_cache, v_cache = self.state.kv(layer)
            set_rows = ops.set_rows
            attn = ops.attn_prefill if act.prefill else ops.attn
            layout = self.state.kv_layout
        q = Strided(cols(0, qg_w - d), w, 2 * d)              # query of head i at [i*2D, i*2D + D)
        gate = Strided(cols(d, qg_w - d), w, 2 * d)
        k = Strided(cols(qg_w, kv_w), w, d)
        v = Strided(cols(qg_w + kv_w, kv_w), w, d)
        # q normed and rotated in place, k into the cache and v into its cache: one dispatch (rope.comp ROPE_QK,
        # ROPE_QKV where the V cache is one buffer with K's layout; else V by set_rows)
        fuse_v = Rope.fuses_v(v_cache, set_rows.layout, layout)
        ops.rope.record_qk(rec, records, q, self._vec(t.q_norm.name), k, self._vec(t.k_norm.name), k_cache, layout,
                           n, h, **(dict(v=v, v_cache=v_cache, v_layout=set_rows.layout) if fuse_v else {}))
        if not fuse_v:
            set_rows.record(rec, records, v, v_cache, n)
        o = Strided.heads(act.o.sub(0, 4 * n * h * d), h, d)
        attn.record(rec, records, q, k_cache, v_cache, o, n, act.attn_scratch, gate=gate)
        ops.linear(rec, self.w[t.output.name], act.o, act.x, n, accumulate=True, prefill=act.prefill)

    def record_delta_net(self, rec: Recorder, layer: int, t: DeltaNetTensors, records: View, act: Activations,
                         n: int, n_snap: int, xin: View, prep: InputPrep | None) -> None:
        cfg, ops = self.cfg, self.ops
        conv_dim, d_inner, hv = cfg.ssm_conv_dim, cfg.ssm_d_inner, cfg.ssm_dt_rank
        d = cfg.ssm_d_state
        # one [n, W] matrix per token: u (qkv) | z | b | a; then c [n, conv_dim]
        w = conv_dim + d_inner + 2 * hv
        proj = act.mix.sub(0, 4 * n * w)
        self.projections(rec, (t.qkv.name, t.gate.name, t.beta.name, t.alpha.name), xin, proj, n, act.prefill,
                         prep)
        u = proj
        z = proj.sub(4 * conv_dim, proj.nbytes - 4 * conv_dim)
        b = proj.sub(4 * (conv_dim + d_inner), proj.nbytes - 4 * (conv_dim + d_inner))
        a = proj.sub(4 * (conv_dim + d_inner + hv), proj.nbytes - 4 * (conv_dim + d_inner + hv))
        c = act.mix.sub(4 * n * w, 4 * n * conv_dim)
        conv_state, ssm_state, conv_snap, ssm_log = self.state.gdn(layer)
        ops.conv.record(rec, records, n, u, w, self._vec(t.conv1d.name), conv_state, c, conv_dim,
                        conv_dim, snapshots=conv_snap if n_snap else None, n_snap=n_snap)
        kd = cfg.ssm_key_dim
        o = act.o.sub(0, 4 * n * d_inner)
        ops.gdn.record(rec, records, n, c, c.sub(4 * kd, c.nbytes - 4 * kd),
                       c.sub(8 * kd, c.nbytes - 8 * kd), conv_dim, b, a, w, self._vec(t.a.name), self._vec(t.dt_bias.name), ssm_state, o, d_inner,
                       cfg.ssm_n_group, hv, cfg.rms_eps, snapshots=ssm_log if n_snap else None,
                       n_snap=n_snap + 1 if n_snap else 0, n_seqs=n, log_steps=n_snap > 0)
        # y_h = RMSNorm(o_h; ssm_norm) * silu(z_h), per value head: folded into the output projection's input
        # (decode / verify), or in place in o (prompt chunks)
        if act.prefill or hv > MAX_IN_HEADS or d % 8:   # fused: up to 64 heads, head_dim a multiple of 8
            oh = Strided.heads(o, hv, d)
            ops.norm.record(rec, oh, self._vec(t.norm.name), oh, n, d, n_head=hv, gate=Strided(z, w, d))
            ops.linear(rec, self.w[t.out.name], o, act.x, n, accumulate=True, prefill=act.prefill)
            return
        zc = z.sub(0, 4 * ((n - 1) * w + d_inner))
        ops.linear(rec, self.w[t.out.name], o, act.x, n, accumulate=True,
                   prep=InputPrep("head_norm", self._vec(t.norm.name), cfg.rms_eps, zc, w, d))

    def record_dense_ffn(self, rec: Recorder, gate: str, up: str, down: str, xn: View, act: Activations,
                         n: int, out: View | None = None, accumulate: bool = True,
                         prep: InputPrep | None = None) -> None:
        """out (+)= down(SiLU(xn gate^T) * (xn up^T)); prep: xn's fused norm (decode / verify)."""
        ff = self.w[gate].shape[0]
        # one [n, 2F] matrix per token: g | u; SiLU(g) * u folded into the down projection's input (decode /
        # verify), or in place of g (prompt chunks)
        self.projections(rec, (gate, up), xn, act.f, n, act.prefill, prep)
        gu = act.f.sub(0, 4 * 2 * n * ff)
        g, u = Strided(gu, 2 * ff), Strided(gu.sub(4 * ff, gu.nbytes - 4 * ff), 2 * ff)
        y = out if out is not None else act.x
        if act.prefill:
            self.ops.swiglu.record(rec, g, u, g, n, ff)
            self.ops.linear(rec, self.w[down], gu, y, n, accumulate=accumulate, prefill=True, x_stride=2 * ff)
            return
        self.record_swiglu_down(rec, down, act, n, y, accumulate)

    def record_swiglu_down(self, rec: Recorder, down: str, act: Activations, n: int, y: View, accumulate: bool,
                           out_gate: tuple[View, int] | None = None) -> None:
        """y (+)= down(SiLU(g) * u) for act.f's [n, g | u] rows, SwiGLU folded into the mat-vec's input."""
        ff = self.w[down].shape[-1]
        gu = act.f.sub(0, 4 * 2 * n * ff)
        up_cols = gu.sub(4 * ff, 4 * ((n - 1) * 2 * ff + ff))
        self.ops.linear(rec, self.w[down], gu, y, n, accumulate=accumulate, x_stride=2 * ff,
                        prep=InputPrep("swiglu", side=up_cols, side_stride=2 * ff), out_gate=out_gate)

    def _experts(self, name: str) -> list[ExpertPart]:
        """An expert stack's parts in experts (placement splits stacks only between experts)."""
        ref = self.w[name]
        per = ref.shape[1]
        return [ExpertPart(p.view, p.row_start // per, p.n_rows // per) for p in ref.parts]

    def record_moe_ffn(self, rec: Recorder, t, act: Activations, n: int, xin: View,
                       prep: InputPrep | None) -> None:
        """Routed experts (softmax top-k, renormalised) plus the sigmoid-gated shared expert (docs/MODEL.md, Forward pass).
        Decode / verify: the FFN norm is folded into every mat-vec that reads it (prep), SwiGLU into both down
        projections' inputs and the shared expert's gated add into its down projection's output write."""
        cfg, ops = self.cfg, self.ops
        e, ne, k, fe = cfg.n_embd, cfg.n_expert, cfg.n_expert_used, cfg.n_ff_exp
        arena = Arena(act.moe.buffer, 16)
        arena.used = act.moe.offset
        gates = arena.take(4 * n * (ne + 1), "router_logits")    # [n, n_expert + 1]: router | shared gate
        ids = arena.take(4 * n * k, "expert_ids")                  # [n, k] u32
        weights = arena.take(4 * n * k, "expert_weights")          # [n, k] f32
        routes = arena.take(4 * routes_words(n, k), "routes")
        g = arena.take(4 * n * k * fe, "expert_gate")              # [n*k, F_e]
        u = arena.take(4 * n * k * fe, "expert_up")                # [n*k, F_e]
        d = arena.take(4 * n * k * e, "expert_down")               # [n*k, E]
        shared_out = arena.take(4 * n * e, "shared_out")           # [n, E] (prompt chunks)
        self.projections(rec, (t.gate_inp.name, t.gate_inp_shexp.name), xin, gates, n, act.prefill, prep)
        shared_gate = Strided(gates.sub(4 * ne, gates.nbytes - 4 * ne), ne + 1)
        ops.router.record(rec, gates, ne + 1, n, ids, weights)
        ops.matvec_id.record_routes(rec, ids, routes, n, k)
        gate_type, up_type = self.w[t.gate_exps.name].ggml_type, self.w[t.up_exps.name].ggml_type
        ops.matvec_id.record(rec, self._experts(t.gate_exps.name), gate_type, ne, fe, e, xin, g, routes, n, k,
                             prep=prep)
        ops.matvec_id.record(rec, self._experts(t.up_exps.name), up_type, ne, fe, e, xin, u, routes, n, k,
                             prep=prep)
        down = self.w[t.down_exps.name].ggml_type
        if not act.prefill:
            # the shared expert's gate | up read the FFN input before the routed sum changes x
            self.projections(rec, (t.gate_shexp.name, t.up_shexp.name), xin, act.f, n, False, prep)
        if act.prefill:
            ops.swiglu.record(rec, Strided.rows(g, fe), Strided.rows(u, fe), Strided.rows(g, fe), n * k, fe)
            ops.matvec_id.record(rec, self._experts(t.down_exps.name), down, ne, e, fe, g, d, routes, n, k,
                                 x_per_slot=True)
        else:
            ops.matvec_id.record(rec, self._experts(t.down_exps.name), down, ne, e, fe, g, d, routes, n, k,
                                 x_per_slot=True, prep=InputPrep("swiglu", side=u))
        ops.matvec_id.record_weighted_sum(rec, d, weights, act.x, n, k, e, accumulate=True)
        # shared expert, scaled by sigmoid(w_shexp . xn) per token
        if act.prefill:
            self.record_dense_ffn(rec, t.gate_shexp.name, t.up_shexp.name, t.down_shexp.name, xin, act, n,
                                  out=shared_out, accumulate=False)
            ops.sigmoid_scale_add.record(rec, Strided.rows(shared_out, e), shared_gate,
                                         Strided.rows(act.x.sub(0, 4 * n * e), e), n, e)
        else:
            self.record_swiglu_down(rec, t.down_shexp.name, act, n, act.x, accumulate=False,
                                    out_gate=(shared_gate.view, ne + 1))

    # --- whole passes -------------------------------------------------------------------------------------------
    def record_trunk(self, rec: Recorder, records: View, act: Activations, n: int, n_snap: int = 0) -> None:
        """Embedding and every trunk block for n tokens; leaves the residual stream in act.x. n_snap > 0 (a verify
        of n_snap drafts per sequence): conv snapshots after rows 0..n_snap-1 and the GDN step log of every row,
        GDN live states left as before the step (vkmtp.graph.device_state)."""
        self.record_input(rec, records, n, act.x)
        for blk in self.blocks:
            self.record_block(rec, blk, records, act, n, n_snap=n_snap)

    def record_input(self, rec: Recorder, records: View, n: int, x: View) -> None:
        """The residual stream entering this device's blocks: the tokens' embeddings, or (a later stage of a
        layer split) the rows the device before it computed, from the boundary buffer."""
        if self.x_in is None:
            self.record_embed(rec, records, n, x)
        else:
            nbytes = 4 * n * self.cfg.n_embd
            rec.copy(self.x_in.sub(0, nbytes), x.sub(0, nbytes))

    def record_output_norm(self, rec: Recorder, act: Activations, n: int, out: View,
                           norm_name: str | None = None) -> None:
        """out [n, E] = RMSNorm(x; output_norm): the post-norm hidden (LM head input, MTP input)."""
        self.norm(rec, act.x, norm_name or self.table.output_norm.name, out, n, self.cfg.n_embd)

    def record_lm_head(self, rec: Recorder, h: View, n_out: int, logits: View, head: str | None = None,
                       n_rows: int | None = None) -> None:
        """logits [n_out, n_rows] = h W^T over the head's first n_rows rows (None: all; the MTP draft's
        reduced vocabulary is the lowest token ids)."""
        ref = self.w[head or self.table.output.name]
        if n_rows is not None and n_rows < ref.shape[0]:
            ref = first_rows(ref, n_rows)
        self.ops.linear(rec, ref, h, logits, n_out)

    def record_mtp(self, rec: Recorder, records: View, h_in: View, act: Activations, n: int, h_out: View) -> None:
        """MTP block for n tokens: token x_p (records) with the target's post-norm hidden h_{p-1} (h_in
        [n, E]) -> h_out [n, E] = shared_head_norm of the block output (docs/MODEL.md, MTP head). Writes the MTP
        KV cache at each token's position."""
        mtp, e = self.table.mtp, self.cfg.n_embd
        cat = act.f.sub(0, 4 * n * 2 * e)           # [n, 2E]: enorm(emb) | hnorm(h)
        self.record_embed(rec, records, n, act.xn, table=mtp.embed_tokens.name)
        self.norm(rec, act.xn, mtp.enorm.name, cat, n, e, y_stride=2 * e)
        self.norm(rec, h_in, mtp.hnorm.name, cat.sub(4 * e, cat.nbytes - 4 * e), n, e, y_stride=2 * e)
        self.ops.linear(rec, self.w[mtp.eh_proj.name], cat, act.x, n, prefill=act.prefill)
        self.record_block(rec, mtp.block, records, act, n, mtp=True)
        self.norm(rec, act.x, mtp.shared_head_norm.name, h_out, n, e)

    def record_mtp_kv(self, rec: Recorder, records: View, h_in: View, act: Activations, n: int) -> None:
        """Only the MTP KV cache rows of n tokens (a catch-up over positions the head will attend to but not
        draft from): record_mtp's dispatches up to the K/V store, the same kernels on the same inputs, so the
        same bits; no query, attention, output projection or FFN."""
        mtp, e = self.table.mtp, self.cfg.n_embd
        t, hkv, d = mtp.block.mixer, self.cfg.n_head_kv, self.cfg.head_dim
        if mtp.block.kind is not LayerKind.ATTENTION:
            raise ValueError("the MTP block's mixer is not attention")
        cat = act.f.sub(0, 4 * n * 2 * e)
        self.record_embed(rec, records, n, act.xn, table=mtp.embed_tokens.name)
        self.norm(rec, act.xn, mtp.enorm.name, cat, n, e, y_stride=2 * e)
        self.norm(rec, h_in, mtp.hnorm.name, cat.sub(4 * e, cat.nbytes - 4 * e), n, e, y_stride=2 * e)
        self.ops.linear(rec, self.w[mtp.eh_proj.name], cat, act.x, n, prefill=act.prefill)
        xin, prep = self.normed_input(rec, act, mtp.block.attn_norm.name, n)
        k_proj = act.mix.sub(0, 4 * n * hkv * d)
        v_proj = act.mix.sub(4 * n * hkv * d, 4 * n * hkv * d)
        self.ops.linear(rec, self.w[t.k.name], xin, k_proj, n, prefill=act.prefill, prep=prep)
        self.ops.linear(rec, self.w[t.v.name], xin, v_proj, n, prefill=act.prefill, prep=prep)
        self.ops.rope.record_to_cache(rec, records, Strided.heads(k_proj, hkv, d), self.state.mtp_k.layers[0],
                                      self.state.mtp_kv_layout, n, norm_weight=self._vec(t.k_norm.name))
        self.ops.set_rows_mtp.record(rec, records, Strided.heads(v_proj, hkv, d), self.state.mtp_v.layers[0], n)


def first_rows(ref: WeightRef, n_rows: int) -> WeightRef:
    """The weight's first n_rows rows: its parts cut at row n_rows (rows are whole quant blocks)."""
    parts = []
    for part in ref.parts:
        n = min(part.n_rows, n_rows - part.row_start)
        if n > 0:
            parts.append(WeightPart(part.view.sub(0, n * ref.row_bytes), part.row_start, n))
    return WeightRef(ref.name, ref.ggml_type, (n_rows, ref.shape[-1]), parts)
