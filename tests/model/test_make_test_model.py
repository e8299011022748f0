"""tools/make_test_model.py without torch: GGUFs from the committed fixture and the k256 preset."""

import importlib.util
import os

import pytest

from vkmtp.gguf import open_gguf
from vkmtp.ref import ReferenceModel

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "make_test_model.py")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_test_model", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k256_preset_quantizes_every_matrix(tool, tmp_path):
    assert (
        tool.main(["--out", str(tmp_path), "--preset", "k256", "--variants", "moe", "--types", "q4_k"]) == 0
    )
    path = tmp_path / "tiny-qwen35-k256-moe-Q4_K.gguf"
    g = open_gguf(str(path))
    types = {info.type_name for name, info in g.tensors.items() if len(info.shape) >= 2}
    assert types <= {"Q4_K", "F32"}
    assert g.tensors["blk.0.ffn_gate_exps.weight"].type_name == "Q4_K"
    assert g.tensors["blk.0.ffn_gate_inp.weight"].type_name == "F32"
    model = ReferenceModel.from_gguf(str(path))
    assert model.has_mtp and model.cfg.n_embd == 256


def test_fixture_models_without_mtp(tool, tmp_path):
    assert tool.main(["--out", str(tmp_path), "--variants", "aligned", "--types", "q8_0", "--no-mtp"]) == 0
    model = ReferenceModel.from_gguf(str(tmp_path / "tiny-qwen35-aligned-nomtp-Q8_0.gguf"))
    assert not model.has_mtp and model.cfg.n_layer_all == 4
