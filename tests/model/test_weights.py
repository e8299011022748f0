"""The tensor table and its validator on converted tiny models, including broken files."""

import numpy as np
import pytest

from vkmtp.convert import write_gguf
from tests.fixtures import FIXTURE_DIR, tokenizer_meta, variant_state
from vkmtp.gguf import GGUFError, open_gguf
from vkmtp.model import ModelConfig, expected_tensors, validate
from vkmtp.model.weights import AttentionTensors, DeltaNetTensors, MoeFfnTensors
from vkmtp.ref import ReferenceModel


def convert(tmp_path, variant, edit=None, name="m.gguf"):
    hf_cfg, state = variant_state(FIXTURE_DIR, variant)
    if edit:
        edit(state)
    path = str(tmp_path / name)
    write_gguf(state, hf_cfg, path, tokenizer_meta=tokenizer_meta(FIXTURE_DIR))
    gguf_file = open_gguf(path)
    return gguf_file, ModelConfig.from_gguf(gguf_file)


def test_dense_table_matches_file(tiny_gguf):
    gguf_file = open_gguf(tiny_gguf("dense"))
    cfg = ModelConfig.from_gguf(gguf_file)
    table = validate(gguf_file, cfg)
    assert [type(b.mixer) for b in table.blocks] == [DeltaNetTensors] * 3 + [AttentionTensors]
    assert table.output.name == "output.weight"
    assert table.mtp is not None and table.mtp.block.index == 4
    assert table.mtp.eh_proj.shape == (cfg.n_embd, 2 * cfg.n_embd)
    assert table.mtp.shared_head_norm.name == "blk.4.nextn.shared_head_norm.weight"
    assert table.mtp.embed_tokens.name == "token_embd.weight" and table.mtp.head.name == "output.weight"
    names = {spec.name for spec in table.specs()}
    assert names == set(gguf_file.tensors)
    for spec in table.specs():
        assert gguf_file.tensors[spec.name].shape == spec.shape


def test_moe_table_tied_head(tiny_gguf):
    gguf_file = open_gguf(tiny_gguf("moe"))
    cfg = ModelConfig.from_gguf(gguf_file)
    table = validate(gguf_file, cfg)
    assert cfg.tied_lm_head and table.output.name == "token_embd.weight" == table.mtp.head.name
    ffn = table.blocks[0].ffn
    assert isinstance(ffn, MoeFfnTensors)
    assert ffn.gate_exps.shape == (cfg.n_expert, cfg.n_ff_exp, cfg.n_embd)
    assert gguf_file.tensors[ffn.gate_inp_shexp.name].shape == (1, cfg.n_embd)  # converter writes HF's [1, E]


def test_shared_expert_gate_as_vector_is_accepted(tmp_path):
    def flatten(state):
        for name in list(state):
            if name.endswith("shared_expert_gate.weight"):
                state[name] = state[name].reshape(-1)

    gguf_file, cfg = convert(tmp_path, "moe", flatten)
    table = validate(gguf_file, cfg)
    assert gguf_file.tensors[table.blocks[0].ffn.gate_inp_shexp.name].shape == (cfg.n_embd,)


def test_missing_tensor_is_named(tmp_path):
    gguf_file, cfg = convert(
        tmp_path, "dense", lambda s: s.pop("model.layers.1.linear_attn.in_proj_a.weight")
    )
    with pytest.raises(
        GGUFError, match=r"missing tensor 'blk\.1\.ssm_alpha\.weight' \(expected shape \[6, 128\]\)"
    ):
        validate(gguf_file, cfg)


def test_wrong_shape_names_expected_and_found(tmp_path):
    def shrink(state):
        state["model.layers.3.self_attn.o_proj.weight"] = state["model.layers.3.self_attn.o_proj.weight"][
            :, :192
        ]

    gguf_file, cfg = convert(tmp_path, "dense", shrink)
    with pytest.raises(
        GGUFError, match=r"'blk\.3\.attn_output\.weight' has shape \[128, 192\], expected \[128, 256\]"
    ):
        validate(gguf_file, cfg)
    with pytest.raises(GGUFError):
        ReferenceModel.from_gguf(gguf_file.path)


def test_leftover_tensor_is_reported(tmp_path):
    def extra(state):
        state["model.layers.9.mlp.gate_proj.weight"] = np.zeros((352, 128), np.float32)

    gguf_file, cfg = convert(tmp_path, "dense", extra)
    with pytest.raises(GGUFError, match=r"unexpected tensor.*blk\.9\.ffn_gate\.weight"):
        validate(gguf_file, cfg)


def test_partial_mtp_block_is_an_error(tmp_path):
    gguf_file, cfg = convert(tmp_path, "dense", lambda s: s.pop("mtp.pre_fc_norm_hidden.weight"))
    with pytest.raises(GGUFError, match=r"blk\.4\.nextn\.hnorm\.weight"):
        validate(gguf_file, cfg)


def test_absent_mtp_block_means_no_mtp(tmp_path):
    def drop_mtp(state):
        for name in [n for n in state if n.startswith("mtp.")]:
            del state[name]

    gguf_file, cfg = convert(tmp_path, "dense", drop_mtp)
    assert cfg.n_nextn == 1  # the config still announces it
    table = validate(gguf_file, cfg)
    assert table.mtp is None
    assert not ReferenceModel.from_gguf(gguf_file.path).has_mtp


def test_optional_nextn_norm_falls_back_to_output_norm(tmp_path):
    gguf_file, cfg = convert(tmp_path, "dense", lambda s: s.pop("mtp.norm.weight"))
    assert validate(gguf_file, cfg).mtp.shared_head_norm.name == "output_norm.weight"


def test_table_without_file_lists_every_required_tensor(tiny_gguf):
    cfg = ModelConfig.from_gguf(open_gguf(tiny_gguf("dense")))
    table = expected_tensors(cfg)
    names = [spec.name for spec in table.specs()]
    assert len(names) == len(set(names))
    assert "output.weight" not in names  # optional, resolved only against a file
    assert "blk.4.nextn.eh_proj.weight" in names
