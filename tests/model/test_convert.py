"""HF -> GGUF conversion: metadata, names, value transforms and tensor types as llama.cpp writes them."""

import numpy as np
import pytest

from vkmtp.convert import ConversionError, write_gguf
from tests.fixtures import FIXTURE_DIR, variant_state
from vkmtp.convert.tensors import reorder_v_heads
from vkmtp.gguf import GGMLType, open_gguf
from vkmtp.ref import ReferenceModel


@pytest.fixture(scope="module")
def dense(tiny_gguf):
    hf_cfg, state = variant_state(FIXTURE_DIR, "dense")
    return hf_cfg, state, open_gguf(tiny_gguf("dense"))


def test_metadata(dense):
    _, _, g = dense
    md = g.metadata
    assert g.arch == "qwen35" and md["general.file_type"] == 0 and md["general.quantization_version"] == 2
    expected = {
        "block_count": 5,
        "nextn_predict_layers": 1,
        "embedding_length": 128,
        "feed_forward_length": 352,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "attention.key_length": 64,
        "attention.value_length": 64,
        "rope.dimension_count": 16,
        "rope.dimension_sections": [3, 3, 2, 0],
        "ssm.conv_kernel": 4,
        "ssm.state_size": 32,
        "ssm.group_count": 2,
        "ssm.time_step_rank": 6,
        "ssm.inner_size": 192,
        "full_attention_interval": 4,
        "attention.recurrent_layers": [True, True, True, False, False],
    }
    for key, value in expected.items():
        assert md[f"qwen35.{key}"] == value, key
    assert md["qwen35.rope.freq_base"] == pytest.approx(1e7)
    assert md["qwen35.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "qwen35"
    assert len(md["tokenizer.ggml.tokens"]) == 512 and md["tokenizer.ggml.tokens"][511] == "<|im_end|>"
    assert md["tokenizer.ggml.eos_token_id"] == 511 and md["tokenizer.ggml.token_type"][511] == 3


def test_reorder_index_map():
    heads = np.arange(8).reshape(8, 1)
    assert reorder_v_heads(heads, 0, 4, 2, 1).ravel().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    heads = np.arange(6).reshape(6, 1)
    assert reorder_v_heads(heads, 0, 2, 3, 1).ravel().tolist() == [0, 3, 1, 4, 2, 5]


def test_value_transforms(dense):
    _, sd, g = dense
    perm = [0, 3, 1, 4, 2, 5]  # tiled <- grouped, H_k=2, H_v=6
    np.testing.assert_array_equal(
        g.dequantize("blk.0.attn_norm.weight"), sd["model.layers.0.input_layernorm.weight"] + 1
    )
    np.testing.assert_array_equal(
        g.dequantize("blk.4.nextn.enorm.weight"), sd["mtp.pre_fc_norm_embedding.weight"] + 1
    )
    np.testing.assert_array_equal(
        g.dequantize("blk.3.attn_q_norm.weight"), sd["model.layers.3.self_attn.q_norm.weight"] + 1
    )
    np.testing.assert_array_equal(
        g.dequantize("blk.0.ssm_norm.weight"), sd["model.layers.0.linear_attn.norm.weight"]
    )
    np.testing.assert_allclose(
        g.dequantize("blk.0.ssm_a"), -np.exp(sd["model.layers.0.linear_attn.A_log"][perm])
    )
    np.testing.assert_array_equal(
        g.dequantize("blk.0.ssm_dt.bias"), sd["model.layers.0.linear_attn.dt_bias"][perm]
    )
    np.testing.assert_array_equal(
        g.dequantize("blk.0.ssm_beta.weight"), sd["model.layers.0.linear_attn.in_proj_b.weight"][perm]
    )
    qkv = sd["model.layers.0.linear_attn.in_proj_qkv.weight"]  # [q 64 | k 64 | v 6 x 32]
    v_rows = qkv[128:].reshape(6, 32, -1)[perm].reshape(192, -1)
    np.testing.assert_array_equal(g.dequantize("blk.0.attn_qkv.weight"), np.concatenate([qkv[:128], v_rows]))
    conv = sd["model.layers.0.linear_attn.conv1d.weight"][:, 0, :]
    conv_v = conv[128:].reshape(6, 32, 4)[perm].reshape(192, 4)
    np.testing.assert_array_equal(
        g.dequantize("blk.0.ssm_conv1d.weight"), np.concatenate([conv[:128], conv_v])
    )
    out = sd["model.layers.0.linear_attn.out_proj.weight"]
    np.testing.assert_array_equal(
        g.dequantize("blk.0.ssm_out.weight"), out.reshape(128, 6, 32)[:, perm].reshape(128, 192)
    )
    np.testing.assert_array_equal(g.dequantize("blk.4.nextn.eh_proj.weight"), sd["mtp.fc.weight"])
    np.testing.assert_array_equal(
        g.dequantize("blk.4.attn_q.weight"), sd["mtp.layers.0.self_attn.q_proj.weight"]
    )


def test_quantized_file_types(tmp_path):
    hf_cfg, state = variant_state(FIXTURE_DIR, "moe")
    path = str(tmp_path / "q.gguf")
    written = write_gguf(
        state,
        hf_cfg,
        path,
        file_type="q8_0",
        type_overrides={"blk.*.ffn_down_exps.weight": "q4_0", "token_embd.weight": "q4_k"},
    )
    for name in (
        "blk.0.ssm_conv1d.weight",
        "blk.0.ffn_gate_inp.weight",
        "blk.0.ffn_gate_inp_shexp.weight",
        "blk.0.ssm_a",
        "blk.0.ssm_dt.bias",
        "blk.0.attn_norm.weight",
        "blk.3.attn_q_norm.weight",
    ):
        assert written[name] == "F32", name
    assert written["blk.0.attn_qkv.weight"] == "Q8_0" and written["blk.4.nextn.eh_proj.weight"] == "Q8_0"
    assert written["blk.2.ffn_down_exps.weight"] == "Q4_0"
    assert written["token_embd.weight"] == "F16"  # rows of 128 do not fill a 256-value Q4_K block
    g = open_gguf(path)
    assert g.metadata["general.file_type"] == 7
    assert g.tensors["blk.0.attn_qkv.weight"].ggml_type == GGMLType.Q8_0
    assert "output.weight" not in g.tensors  # tied
    ReferenceModel.from_gguf(path)


def test_k_quant_file_type(tmp_path, tiny_gguf):
    hf_cfg, state = variant_state(FIXTURE_DIR, "dense")
    path = str(tmp_path / "k.gguf")
    written = write_gguf(state, hf_cfg, path, file_type="q4_k")
    assert written["blk.3.attn_output.weight"] == "Q4_K"  # rows of H*D = 256 values
    assert written["blk.3.attn_q.weight"] == "F16"  # rows of n_embd = 128: llama.cpp's F16 fallback
    assert open_gguf(path).metadata["general.file_type"] == 14
    tokens = [3, 4, 5, 90, 250]
    quant = ReferenceModel.from_gguf(path)
    exact = ReferenceModel.from_gguf(tiny_gguf("dense"))
    q_logits, _ = quant.forward(tokens, quant.new_state())
    f_logits, _ = exact.forward(tokens, exact.new_state())
    assert 0 < np.abs(q_logits - f_logits).max() < 0.1 * np.abs(f_logits).max()


def test_q8_0_file_reproduces_f32_model(tiny_gguf):
    # the fixture weights are Q8_0-representable and the V-head reorder moves whole 32-value blocks
    a = ReferenceModel.from_gguf(tiny_gguf("dense"))
    b = ReferenceModel.from_gguf(tiny_gguf("dense", "q8_0"))
    tokens = [1, 2, 3, 50, 60]
    np.testing.assert_array_equal(a.forward(tokens, a.new_state())[0], b.forward(tokens, b.new_state())[0])


def test_no_mtp_drops_the_block(tiny_gguf):
    g = open_gguf(tiny_gguf("dense", mtp=False))
    assert g.metadata["qwen35.block_count"] == 4 and "qwen35.nextn_predict_layers" not in g.metadata
    assert not any(name.startswith("blk.4.") for name in g.tensors)


def test_fused_experts_and_multimodal_layout_convert_identically(tmp_path):
    hf_cfg, state = variant_state(FIXTURE_DIR, "moe")
    write_gguf(state, hf_cfg, str(tmp_path / "a.gguf"))
    fused, n = {}, hf_cfg["num_experts"]
    for name, value in state.items():
        if ".experts." not in name:
            fused[
                name.replace("model.", "model.language_model.", 1) if name.startswith("model.") else name
            ] = value
    for prefix in sorted({name.split("experts.")[0] for name in state if ".experts." in name}):
        gate = [state[f"{prefix}experts.{e}.gate_proj.weight"] for e in range(n)]
        up = [state[f"{prefix}experts.{e}.up_proj.weight"] for e in range(n)]
        target = (
            prefix.replace("model.", "model.language_model.", 1) if prefix.startswith("model.") else prefix
        )
        fused[target + "experts.gate_up_proj"] = np.stack([np.concatenate([g, u]) for g, u in zip(gate, up)])
        fused[target + "experts.down_proj"] = np.stack(
            [state[f"{prefix}experts.{e}.down_proj.weight"] for e in range(n)]
        )
    fused["model.visual.blocks.0.attn.qkv.weight"] = np.zeros((3, 3), np.float32)
    vl_cfg = {
        "architectures": ["Qwen3_5MoeForConditionalGeneration"],
        "model_type": "qwen3_5_moe",
        "tie_word_embeddings": True,
        "text_config": {k: v for k, v in hf_cfg.items() if k != "architectures"},
    }
    write_gguf(fused, vl_cfg, str(tmp_path / "b.gguf"))
    a, b = open_gguf(str(tmp_path / "a.gguf")), open_gguf(str(tmp_path / "b.gguf"))
    assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        np.testing.assert_array_equal(a.dequantize(name), b.dequantize(name), err_msg=name)


def test_conversion_errors(tmp_path):
    hf_cfg, state = variant_state(FIXTURE_DIR, "dense")
    with pytest.raises(ConversionError, match="cannot map tensor 'model.layers.0.mystery.weight'"):
        write_gguf(
            {**state, "model.layers.0.mystery.weight": np.zeros(3, np.float32)},
            hf_cfg,
            str(tmp_path / "x.gguf"),
        )
    with pytest.raises(ConversionError, match="not a Qwen3.5"):
        write_gguf(state, {"architectures": ["LlamaForCausalLM"]}, str(tmp_path / "x.gguf"))
    with pytest.raises(ConversionError, match="unknown file type"):
        write_gguf(state, hf_cfg, str(tmp_path / "x.gguf"), file_type="q9_9")
