"""The memory plan is what the engine allocates (every buffer, by name and size), --fit picks a context that
fits or fails before any allocation with the plan in the message, and `vkmtp info` says whether it fits."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from vkmtp.device import Device
from vkmtp.device.info import MemoryHeap
from vkmtp.engine.api import EngineConfig
from vkmtp.engine.vulkan import VulkanEngine, fit_config
from vkmtp.graph.memory_plan import DeviceMemoryError
from vkmtp.spec import SpecConfig

GRID = list(itertools.product(["dense", "moe"], [1, 4], [True, False], ["f16", "q8_0"], [256, 32768]))


def _buffers(bufs) -> list[tuple[str, int]]:
    return sorted((b.name, b.nbytes) for b in bufs)


@pytest.mark.parametrize("variant,n_slots,mtp,kv,n_ctx", GRID,
                         ids=[f"{v}-np{s}-{'mtp' if m else 'nomtp'}-{k}-c{c}" for v, s, m, k, c in GRID])
def test_plan_equals_the_bytes_allocated(device, fixture_models, variant, n_slots, mtp, kv, n_ctx):
    before = {id(b) for b in device.live_buffers()}
    config = EngineConfig(n_ctx=n_ctx, n_slots=n_slots, kv_type=kv, spec=SpecConfig(enabled=mtp, n_max=3))
    eng = VulkanEngine(fixture_models(variant, "f32"), config, device=device)
    try:
        made = [b for b in device.live_buffers() if id(b) not in before]
        plan = eng.memory_plan
        assert _buffers(made) == _buffers(plan.buffers)
        assert sum(b.nbytes for b in made) == plan.total
        assert plan.kv > 0 and plan.scratch > 0 and plan.part("hidden") > 0 and plan.part("io") > 0
        assert (plan.mtp_kv > 0) == mtp and (plan.snapshots > 0) == mtp and (plan.mtp_weights > 0) == mtp
        assert plan.part("checkpoints") > 0   # --ctx-checkpoints' default: 8 per slot
    finally:
        eng.close()
    assert {id(b) for b in device.live_buffers()} == before


@pytest.mark.parametrize("n_ckpt", [0, 3])
def test_checkpoints_are_in_the_plan(device, fixture_models, n_ckpt):
    before = {id(b) for b in device.live_buffers()}
    config = EngineConfig(n_ctx=256, n_slots=2, ctx_checkpoints=n_ckpt, spec=SpecConfig(n_max=3))
    eng = VulkanEngine(fixture_models("dense", "f32"), config, device=device)
    try:
        made = [b for b in device.live_buffers() if id(b) not in before]
        assert _buffers(made) == _buffers(eng.memory_plan.buffers)
        cfg = eng.cfg
        per_slot = len(cfg.recurrent_layers) * 4 * ((cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
                                                    + cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state) \
            + 4 * cfg.n_embd   # states of every GDN layer + the MTP head's pending hidden
        assert eng.memory_plan.part("checkpoints") >= 2 * n_ckpt * per_slot
        assert (eng.memory_plan.part("checkpoints") > 0) == (n_ckpt > 0)
    finally:
        eng.close()


def test_draft_cache_types_are_their_own(device, fixture_models):
    """-ctk q8_0 -ctv f16 -ctvd q8_0: each cache in its own type, and tokens equal the all-f16 run's shape."""
    config = EngineConfig(n_ctx=256, kv_type="q8_0", kv_type_v="f16", draft_kv_type_k="f16",
                          draft_kv_type_v="q8_0", spec=SpecConfig(n_max=2))
    eng = VulkanEngine(fixture_models("dense", "f32"), config, device=device)
    try:
        lay = eng.memory_plan.layouts
        assert (lay.k.kv_type, lay.v.kv_type, lay.mtp_k.kv_type, lay.mtp_v.kv_type) == ("q8_0", "f16", "f16",
                                                                                         "q8_0")
        from vkmtp.engine.api import Request
        from vkmtp.sampling import SamplingParams

        out = []
        for ev in eng.generate(Request([5, 17, 99, 3, 250, 11], SamplingParams.greedy_params(), max_tokens=12)):
            out += ev.new_ids
        assert len(out) == 12
    finally:
        eng.close()


def _small_device(budget_mib: int) -> Device:
    dev = Device()
    # a small integrated GPU (a CPU device's limit is the host's memory, not its heap)
    dev.info = dataclasses.replace(dev.info, heaps=(MemoryHeap(budget_mib << 20, True, 0, 0),),
                                   memory_budget=False, kind="integrated")
    return dev


def test_fit_picks_the_largest_context_that_fits(fixture_models):
    path = fixture_models("dense", "f32")
    dev = _small_device(40)
    try:
        # -c not fixed, asking for 1M tokens (more than fits): the largest that fits
        config = EngineConfig(n_ctx=1 << 20, ctx_fixed=False, fit_margin_mib=0, spec=SpecConfig(n_max=3))
        eng = VulkanEngine(path, config, device=dev)
        try:
            n = eng.n_ctx
            assert 256 <= n < 1 << 20 and n % 256 == 0
            assert eng.config.n_ctx == n and eng.config.ctx_fixed and "context" in eng.fit_message
            assert eng.memory_plan.total <= 40 << 20
            # one more step of context would not fit
            bigger = dataclasses.replace(config, n_ctx=n + 256, ctx_fixed=True)
            with pytest.raises(DeviceMemoryError):
                VulkanEngine(path, bigger, device=dev)
        finally:
            eng.close()
    finally:
        dev.destroy()


def test_nothing_fits_fails_before_any_allocation_with_the_plan(fixture_models):
    dev = _small_device(1)
    try:
        with pytest.raises(DeviceMemoryError) as err:
            VulkanEngine(fixture_models("dense", "f32"), EngineConfig(n_ctx=0, ctx_fixed=False, fit_margin_mib=0),
                         device=dev)
        msg = str(err.value)
        assert "KV cache" in msg and "total" in msg and "reduce with" in msg
        assert dev.allocated_bytes == 0 and dev.live_buffers() == []
    finally:
        dev.destroy()


def test_a_layer_larger_than_one_binding_is_refused_before_allocation(fixture_models):
    """A fixed -c whose one-layer KV exceeds maxStorageBufferRange fails with the plan, not at allocation."""
    dev = Device()
    dev.info = dataclasses.replace(dev.info, max_storage_buffer_range=1 << 20)
    try:
        with pytest.raises(DeviceMemoryError, match="maxStorageBufferRange") as err:
            VulkanEngine(fixture_models("dense", "f32"), EngineConfig(n_ctx=65536), device=dev)
        assert "total" in str(err.value) and dev.live_buffers() == []
    finally:
        dev.destroy()


def test_fit_config_and_info(fixture_models, capsys):
    from vkmtp.cli.main import main

    path = fixture_models("dense", "f32")
    config, message = fit_config(path, EngineConfig(n_ctx=0, ctx_fixed=False))
    assert config.ctx_fixed and config.n_ctx > 0 and str(config.n_ctx) in message
    assert main(["info", path, "-c", "512"]) == 0
    out = capsys.readouterr().out
    assert "fits on " in out and "budget" in out and "does not fit" not in out
    # ~1 TB of KV (31 GB per layer buffer): fits on no machine, and stays under the 64 decode-attention splits a
    # CPU driver's loop budget allows (about 2M positions; vkmtp.ops.flash_attn.budget_splits)
    assert main(["info", path, "-c", "2000000", "-np", "64"]) == 0
    out = capsys.readouterr().out
    assert "does not fit on " in out and "reduce with" in out


def _tokens(eng, prompt, n=16):
    from vkmtp.engine.api import Request
    from vkmtp.sampling import SamplingParams

    out = []
    for ev in eng.generate(Request(prompt, SamplingParams.greedy_params(), max_tokens=n)):
        out += ev.new_ids
    return out


def test_tiny_submit_budget_splits_prefill_and_keeps_tokens(device, fixture_models):
    path = fixture_models("dense", "f32")
    # 5 chunks of 8 and the last token on its own (a prompt-cache checkpoint one token before the end): 6 chunks
    prompt = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33, 2, 64, 71, 200, 19, 23, 31, 37] * 2
    runs = {}
    for ms in (1e9, 1e-6):
        config = EngineConfig(n_ctx=256, ubatch=8, max_submit_ms=ms, spec=SpecConfig(n_max=2))
        eng = VulkanEngine(path, config, device=device)
        try:
            runs[ms] = (_tokens(eng, prompt), list(eng.prefill_submissions))
        finally:
            eng.close()
    (whole, one), (split, many) = runs[1e9], runs[1e-6]
    assert split == whole
    assert one == [1] * 6
    n_layers = many[-1]
    assert many[0] == 1 and n_layers > 1 and max(many) == n_layers   # later chunks: one layer per submission


def test_generate_json_reports_memory_and_submissions(capsys):
    import json

    from vkmtp.cli.main import main

    assert main(["generate", "-p", "one two three four five six seven eight nine ten", "-n", "4", "--temp", "0",
                 "-ub", "8", "--json", "--max-submit-ms", "0.000001", "-c", "512"]) == 0
    got = json.loads(capsys.readouterr().out)
    mem, sub = got["memory"], got["submissions"]
    assert mem["device_bytes"] == mem["planned_bytes"] > 0 and mem["peak_rss_bytes"] >= mem["load_peak_rss_bytes"] > 0
    assert sub["max_submit_ms"] == 0.000001 and len(sub["prefill_submissions"]) >= 2
    assert sub["prefill_submissions"][-1] > 1 and got["n_ctx"] == 512


def test_kv_caches_larger_than_one_buffer_are_cut_into_parts(fixture_models):
    """A device that binds 6 MiB per storage buffer: at n_ctx 65536 each layer's KV cache (and the MTP head's)
    is cut into parts. The plan is what is allocated, and greedy tokens of two sequences at once (the second
    slot's rows in the third part), MTP on, equal those of a device without the limit."""
    from vkmtp.engine.api import Request
    from vkmtp.sampling import SamplingParams

    path = fixture_models("dense", "f32")
    prompts = ([5, 17, 99, 3, 250, 11, 42, 7, 8, 9], [120, 33, 2, 64, 71, 200, 19])
    config = EngineConfig(n_ctx=65536, n_slots=2, spec=SpecConfig(n_max=3))
    outs = []
    for max_range in (None, 6 << 20):
        dev = Device()
        if max_range:
            dev.info = dataclasses.replace(dev.info, max_storage_buffer_range=max_range)
        eng = VulkanEngine(path, config, device=dev)
        try:
            made = _buffers(dev.live_buffers())
            assert made == _buffers(eng.memory_plan.buffers)
            kv = [n for name, n in made if name.startswith(("k_cache", "v_cache", "mtp_k", "mtp_v"))]
            assert max(kv) <= (max_range or max(kv))
            if max_range:
                layout = eng.memory_plan.layouts.k
                assert len(eng.state.k_cache.layers[0]) == -(-layout.nbytes // (max_range // layout.row_bytes
                                                                                 * layout.row_bytes)) > 1
            seqs = [eng.submit(Request(p, SamplingParams.greedy_params(), max_tokens=12)) for p in prompts]
            got = {s.id: [] for s in seqs}
            while eng.has_work():
                for ev in eng.step():
                    got[ev.seq.id] += ev.new_ids
            outs.append([got[s.id] for s in seqs])
        finally:
            eng.close()
            dev.destroy()
    assert outs[1] == outs[0] and all(len(o) == 12 for o in outs[0])
