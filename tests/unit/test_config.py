"""ModelConfig.from_metadata / from_gguf: keys, defaults, derived values and errors (docs/MODEL.md, Metadata)."""

import pytest

from vkmtp.gguf import GGUFError
from vkmtp.model.config import LayerKind, ModelConfig


def qwen36_27b() -> dict:
    """Metadata of Qwen3.6-27B with its MTP block (the released model's values)."""
    a = "qwen35"
    return {
        "general.architecture": a,
        f"{a}.block_count": 65,
        f"{a}.nextn_predict_layers": 1,
        f"{a}.context_length": 262144,
        f"{a}.embedding_length": 5120,
        f"{a}.feed_forward_length": 17408,
        f"{a}.attention.head_count": 24,
        f"{a}.attention.head_count_kv": 4,
        f"{a}.attention.key_length": 256,
        f"{a}.attention.value_length": 256,
        f"{a}.attention.layer_norm_rms_epsilon": 1e-6,
        f"{a}.rope.freq_base": 1e7,
        f"{a}.rope.dimension_count": 64,
        f"{a}.rope.dimension_sections": [11, 11, 10, 0],
        f"{a}.ssm.conv_kernel": 4,
        f"{a}.ssm.state_size": 128,
        f"{a}.ssm.group_count": 16,
        f"{a}.ssm.time_step_rank": 48,
        f"{a}.ssm.inner_size": 6144,
        f"{a}.full_attention_interval": 4,
    }


def qwen36_35b_a3b() -> dict:
    a = "qwen35moe"
    md = {k.replace("qwen35.", f"{a}."): v for k, v in qwen36_27b().items()}
    md.update(
        {
            "general.architecture": a,
            f"{a}.block_count": 41,
            f"{a}.embedding_length": 2048,
            f"{a}.attention.head_count": 16,
            f"{a}.attention.head_count_kv": 2,
            f"{a}.ssm.time_step_rank": 32,
            f"{a}.ssm.inner_size": 4096,
            f"{a}.expert_count": 256,
            f"{a}.expert_used_count": 8,
            f"{a}.expert_feed_forward_length": 512,
            f"{a}.expert_shared_feed_forward_length": 512,
        }
    )
    del md[f"{a}.feed_forward_length"]
    return md


def test_dense_27b_derived_values():
    cfg = ModelConfig.from_metadata(qwen36_27b(), n_vocab=248320)
    assert (cfg.n_layer, cfg.n_layer_all, cfg.mtp_layer) == (64, 65, 64)
    assert cfg.attention_layers == tuple(range(3, 64, 4))
    assert len(cfg.recurrent_layers) == 48
    assert cfg.layer_kinds[64] is LayerKind.ATTENTION
    assert (cfg.ssm_key_dim, cfg.ssm_conv_dim, cfg.ssm_head_v_dim) == (2048, 10240, 128)
    assert (cfg.n_gqa, cfg.n_rot, cfg.rope_sections) == (6, 64, (11, 11, 10, 0))
    assert cfg.has_mtp and not cfg.is_moe and not cfg.tied_lm_head
    assert cfg.n_ff == 17408 and cfg.n_vocab == 248320


def test_moe_35b_a3b():
    cfg = ModelConfig.from_metadata(qwen36_35b_a3b(), n_vocab=248320)
    assert cfg.is_moe and cfg.n_layer == 40 and cfg.attention_layers[-1] == 39
    assert (cfg.n_expert, cfg.n_expert_used, cfg.n_ff_exp, cfg.n_ff_shexp, cfg.n_ff) == (256, 8, 512, 512, 0)
    assert cfg.ssm_conv_dim == 8192


def test_documented_defaults():
    md = qwen36_27b()
    for key in (
        "nextn_predict_layers",
        "attention.head_count_kv",
        "attention.key_length",
        "attention.value_length",
        "rope.freq_base",
        "rope.dimension_count",
        "full_attention_interval",
    ):
        del md[f"qwen35.{key}"]
    md["qwen35.block_count"] = 64
    md["qwen35.embedding_length"] = 24 * 256
    cfg = ModelConfig.from_metadata(md, n_vocab=1000)
    assert cfg.n_nextn == 0 and not cfg.has_mtp and cfg.n_layer == 64
    assert cfg.n_head_kv == 24 and cfg.head_dim == 256 and cfg.n_rot == 256
    assert cfg.rope_freq_base == 10000.0 and cfg.full_attention_interval == 4
    assert cfg.attention_layers == tuple(range(3, 64, 4))


def test_recurrent_layers_flags_override_the_interval():
    md = qwen36_27b()
    md["qwen35.block_count"] = 5
    flags = [True, False, True, True, False]
    md["qwen35.attention.recurrent_layers"] = flags
    cfg = ModelConfig.from_metadata(md, n_vocab=10)
    assert cfg.is_recurrent == tuple(flags)
    assert cfg.attention_layers == (1,) and cfg.recurrent_layers == (0, 2, 3)


def test_vocab_size_from_tokenizer_tokens():
    md = qwen36_27b()
    md["tokenizer.ggml.tokens"] = ["a"] * 77
    assert ModelConfig.from_metadata(md).n_vocab == 77


@pytest.mark.parametrize(
    "change,message",
    [
        ({"general.architecture": "llama"}, "unsupported architecture 'llama'"),
        ({"qwen35.block_count": None}, "missing required metadata key 'qwen35.block_count'"),
        ({"qwen35.attention.layer_norm_rms_epsilon": None}, "layer_norm_rms_epsilon"),
        ({"qwen35.rope.dimension_sections": None}, "rope.dimension_sections"),
        ({"qwen35.ssm.group_count": None}, "ssm.group_count"),
        ({"qwen35.nextn_predict_layers": 65}, "nextn_predict_layers=65"),
        ({"qwen35.ssm.inner_size": 6000}, "inner_size=6000"),
        ({"qwen35.attention.value_length": 128}, "key_length=256 != value_length=128"),
        ({"qwen35.attention.recurrent_layers": [True] * 3}, "array of block_count=65"),
        ({"qwen35.embedding_length": "5120"}, "embedding_length must be a non-negative integer"),
        ({"qwen35.attention.head_count": [24, 24, 12]}, "per-layer values"),
        ({"qwen35.feed_forward_length": None}, "without feed_forward_length"),
    ],
)
def test_errors_name_the_problem(change, message):
    md = qwen36_27b()
    for key, value in change.items():
        if value is None:
            del md[key]
        else:
            md[key] = value
    with pytest.raises(GGUFError, match=message.replace("(", r"\(").replace("[", r"\[")):
        ModelConfig.from_metadata(md, n_vocab=248320, source="model.gguf")


def test_moe_needs_expert_count():
    md = qwen36_35b_a3b()
    del md["qwen35moe.expert_count"]
    with pytest.raises(GGUFError, match="qwen35moe.expert_count"):
        ModelConfig.from_metadata(md, n_vocab=10)


def test_mtp_block_cannot_be_recurrent():
    md = qwen36_27b()
    md["qwen35.attention.recurrent_layers"] = [True] * 65
    with pytest.raises(GGUFError, match="MTP block"):
        ModelConfig.from_metadata(md, n_vocab=10)


def test_config_is_frozen():
    cfg = ModelConfig.from_metadata(qwen36_27b(), n_vocab=10)
    with pytest.raises(AttributeError):
        cfg.n_embd = 1
