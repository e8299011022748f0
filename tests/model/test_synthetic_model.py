"""tools/make_synthetic_model.py: real Qwen3.5/3.6 shapes, shortened; `vkmtp info`, the tokenizer and the
engine accept the files, weights larger than the device's buffer limit are split, and writing streams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vkmtp.cli.main import main as vkmtp_main
from vkmtp.engine.api import EngineConfig
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.gguf import open_gguf
from vkmtp.model.config import ModelConfig
from vkmtp.spec import SpecConfig
from vkmtp.text.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from make_synthetic_model import REAL_VOCAB, main as make_main, quant_type, vocabulary  # noqa: E402


def make(tmp_path, *args) -> str:
    out = str(tmp_path / "model.gguf")
    assert make_main([out, *args]) == 0
    return out


def test_moe_real_shapes_shortened(device, tmp_path, capsys):
    path = make(tmp_path, "--preset", "35b-a3b", "--layers", "1", "--experts", "8", "--vocab", "4096",
                "--type", "q4_k_m")
    f = open_gguf(path)
    cfg = ModelConfig.from_gguf(f)
    assert (cfg.arch, cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim) == ("qwen35moe", 2048, 16, 2, 256)
    assert (cfg.ssm_dt_rank, cfg.ssm_n_group, cfg.ssm_d_state, cfg.n_ff_exp, cfg.n_ff_shexp) == (32, 16, 128,
                                                                                                  512, 512)
    assert cfg.n_layer == 1 and cfg.has_mtp and not cfg.tied_lm_head
    types = {n: t.ggml_type for n, t in f.tensors.items()}
    assert types["output.weight"] == 14 and types["blk.0.ffn_down_exps.weight"] == 14   # Q6_K
    assert types["blk.0.ffn_gate_exps.weight"] == 12 and types["blk.0.ffn_gate_inp.weight"] == 0
    capsys.readouterr()
    assert vkmtp_main(["info", path, "-c", "256"]) == 0
    info = capsys.readouterr().out
    assert "qwen35moe (MoE), 1 layers" in info and "MTP head      present" in info
    tok = Tokenizer.from_gguf(f)
    assert tok.n_vocab == 4096 and tok.decode(tok.encode("def f(x): return x")) == "def f(x): return x"
    w = f.dequantize("blk.0.ffn_up_exps.weight")
    assert np.all(np.isfinite(w)) and 0 < np.abs(w).max() < 1
    engine = VulkanEngine(path, EngineConfig(n_ctx=64, spec=SpecConfig(n_max=2)), device=device)
    try:
        assert engine.use_mtp and engine.cfg.n_expert == 8
    finally:
        engine.close()


def test_real_vocab_embedding_is_split_on_small_buffer_limits(device, tmp_path):
    """0.8B shapes, real vocabulary: the tied Q4_K embedding is 143 MB, over lavapipe's 128 MiB limit."""
    path = str(tmp_path / "model.gguf")
    # written in a child process that reports its own peak RSS: streaming keeps it far below the 143 MB
    # embedding plus the interpreter, numpy and the 248320-token vocabulary (about 120 MB measured)
    # (VmHWM of the process's own memory map: ru_maxrss would include the parent's from before exec)
    code = (f"import sys; sys.argv = ['make', {path!r}, '--preset', '0.8b', '--layers', '1', "
            f"'--type', 'q4_k', '--chunk-mib', '4']; import make_synthetic_model as m; rc = m.main(); "
            f"print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); "
            f"sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tools")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    peak_mib = int(done.stdout.split()[-1]) >> 10
    assert peak_mib < 200, f"writing peaked at {peak_mib} MiB RSS: the 143 MB embedding was not streamed"
    engine = VulkanEngine(path, EngineConfig(n_ctx=64, spec=SpecConfig(enabled=False)), device=device)
    try:
        ref = engine.weights["token_embd.weight"]
        assert engine.cfg.n_vocab == REAL_VOCAB and engine.cfg.tied_lm_head
        expect_parts = -(-ref.nbytes // min(device.info.max_storage_buffer_range, 1 << 30))
        assert len(ref.parts) == expect_parts
        assert sum(p.n_rows for p in ref.parts) == REAL_VOCAB
        tok = Tokenizer.from_gguf(engine.gguf)
        ids = tok.encode("Hello world, <|im_end|>", add_special=True, parse_special=True)
        assert len(ids) < 13 and ids[-1] == REAL_VOCAB - 1   # 13 bytes merged, then the special token
        assert tok.decode(ids) == "Hello world, <|im_end|>"
    finally:
        engine.close()


def test_vocabulary_is_exact_and_unique():
    tokens, types, merges = vocabulary(70000)
    assert len(tokens) == len(types) == 70000 and len(set(tokens)) == 70000
    assert tokens[-1] == "<|im_end|>" and types[-1] == 3
    assert len(merges) == 70000 - 256 - 3


def test_q4_k_m_mix_follows_the_more_bits_layers():
    n = 64
    down = [quant_type(f"blk.{i}.ffn_down.weight", (5120, 17408), "q4_k_m", n, False).name for i in range(n)]
    assert down[:8] == ["Q6_K"] * 8 and down[-8:] == ["Q6_K"] * 8 and down[8:11] == ["Q4_K", "Q4_K", "Q6_K"]
    assert quant_type("blk.3.attn_q.weight", (12288, 5120), "q4_k_m", n, False).name == "Q4_K"
    assert quant_type("token_embd.weight", (REAL_VOCAB, 1024), "q4_k_m", 24, True).name == "Q6_K"
    assert quant_type("blk.0.ssm_norm.weight", (128,), "q4_k_m", n, False).name == "F32"


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert make_main([str(tmp_path / "x.gguf"), "--preset", "27b", "--experts", "8"]) == 1
    assert "not a MoE model" in capsys.readouterr().err
    assert make_main([str(tmp_path / "x.gguf"), "--vocab", "100"]) == 1
    assert "too small" in capsys.readouterr().err


@pytest.mark.parametrize("preset,billions",
                         [("0.8b", 0.77), ("9b", 9.20), ("27b", 27.32), ("35b-a3b", 35.51)])
def test_presets_have_the_real_parameter_counts(preset, billions):
    """Text + MTP parameters of the full-size presets (the vision tower is not part of a text GGUF)."""
    from make_synthetic_model import PRESETS, metadata
    from vkmtp.model.weights import expected_tensors

    s = PRESETS[preset]
    cfg = ModelConfig.from_metadata(metadata(s), n_vocab=s.n_vocab, tied_lm_head=s.tied)
    present = {f"blk.{cfg.mtp_layer}.nextn.eh_proj.weight"} | (set() if s.tied else {"output.weight"})
    n = sum(int(np.prod(spec.shape)) for spec in expected_tensors(cfg, present).specs())
    assert n / 1e9 == pytest.approx(billions, abs=0.01)


@pytest.mark.slow
def test_262144_context_on_real_0_8b_shapes_gives_the_4096_tokens(device, tmp_path):
    """Qwen3.5-0.8B's attention shapes (2 KV heads of 256: 1 KiB per f16 row) at -c 262144: every KV cache,
    the MTP head's too, is 256.5 MiB, over lavapipe's 128 MiB per storage buffer, so each is cut into parts.
    A 520-token prompt and greedy MTP decoding give the tokens of -c 4096 (four layers keep it short)."""
    path = make(tmp_path, "--preset", "0.8b", "--layers", "4", "--vocab", "4096", "--type", "q8_0")
    from vkmtp.engine.api import Request
    from vkmtp.sampling import SamplingParams

    prompt = [int(t) for t in np.random.default_rng(7).integers(0, 4096, 520)]
    outs = []
    for n_ctx in (4096, 262144):
        eng = VulkanEngine(path, EngineConfig(n_ctx=n_ctx, spec=SpecConfig(n_max=3)), device=device)
        try:
            layout = eng.memory_plan.layouts.k
            parted = layout.nbytes > device.info.max_storage_buffer_range
            assert isinstance(eng.state.k_cache.layers[0], list) == parted
            assert isinstance(eng.state.mtp_k.layers[0], list) == parted
            out, drafted = [], 0
            for ev in eng.generate(Request(prompt, SamplingParams.greedy_params(), max_tokens=16)):
                out += ev.new_ids
                drafted = ev.seq.spec.draft_n
            outs.append(out)
        finally:
            eng.close()
    assert parted and len(outs[0]) == 16 and drafted > 0
    assert outs[1] == outs[0]
