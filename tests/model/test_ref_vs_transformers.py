"""The NumPy reference against transformers' own Qwen3.5 models (logits saved in tests/data/tiny_qwen35).

Trunk: transformers 5.23 Qwen3_5ForCausalLM / Qwen3_5MoeForCausalLM, prefill and cached decode steps.
MTP head: the torch module in tools/make_test_model.py (transformers has no MTP head).
Tolerance: max |delta| <= 1e-3 x max |logit| for F32 files.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures import FIXTURE_DIR, load_fixture_meta, reference_data
from vkmtp.ref import ReferenceModel

RELATIVE_TOL = 1e-3


def assert_logits_close(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    assert np.isfinite(ours).all(), f"{what}: non-finite values"
    scale = float(np.abs(theirs).max())
    err = float(np.abs(ours - theirs).max())
    assert err <= RELATIVE_TOL * scale, f"{what}: max |delta| {err:.3g} > {RELATIVE_TOL} x {scale:.3g}"
    assert (ours.argmax(-1) == theirs.argmax(-1)).all(), f"{what}: argmax differs"


@pytest.fixture(scope="module")
def meta():
    return load_fixture_meta(FIXTURE_DIR)


@pytest.mark.parametrize("variant", ["dense", "moe"])
def test_prefill_and_decode_logits_match_transformers(tiny_gguf, meta, variant):
    ref = reference_data(FIXTURE_DIR, variant)
    model = ReferenceModel.from_gguf(tiny_gguf(variant))
    state = model.new_state()
    logits, hidden = model.forward(ref["prompt_tokens"], state)
    assert_logits_close(logits, ref["prefill_logits"], f"{variant} prefill")
    np.testing.assert_allclose(hidden, ref["prefill_hidden"], atol=1e-3)
    for step, token in enumerate(ref["decode_tokens"]):
        logits, _ = model.forward([token], state)
        assert_logits_close(logits[0], ref["decode_logits"][step], f"{variant} decode step {step}")
    assert state.n_past == len(ref["prompt_tokens"]) + len(ref["decode_tokens"])


@pytest.mark.parametrize("variant", ["dense", "moe"])
def test_mtp_head_matches_torch_module(tiny_gguf, variant):
    ref = reference_data(FIXTURE_DIR, variant)
    model = ReferenceModel.from_gguf(tiny_gguf(variant))
    assert model.has_mtp
    prompt = ref["prompt_tokens"]
    _, hidden = model.forward(prompt, model.new_state())
    mtp_state = model.new_mtp_state()
    h_prev = np.concatenate([np.zeros((1, hidden.shape[1]), hidden.dtype), hidden[:-1]])
    logits, _ = model.mtp_forward(prompt, h_prev, mtp_state)
    assert_logits_close(logits, ref["mtp_prompt_logits"], f"{variant} MTP over the prompt")
    # chained draft: (id_last, h_{n-1}) at position n, then the MTP's own argmax and hm
    token, h = int(ref["draft_input_tokens"][0]), hidden[-1:]
    for step, expected in enumerate(ref["draft_logits"]):
        assert token == ref["draft_input_tokens"][step]
        logits, hm = model.mtp_forward([token], h, mtp_state)
        assert_logits_close(logits[0], expected, f"{variant} MTP draft step {step}")
        token, h = int(logits[0].argmax()), hm
    assert mtp_state.n_past == len(prompt) + len(ref["draft_logits"])


def test_fixture_records_its_generator(meta):
    assert meta["transformers"].startswith("5.")
    assert set(meta["variants"]) == {"dense", "moe"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dense", "moe"])
def test_fixture_regenerates_with_transformers(variant):
    """Re-run transformers (and the torch MTP module) on the committed weights: the saved logits must come
    back, so the fixture is what the tool says it is."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import importlib.util
    import os

    from tests.fixtures import variant_state

    tool_path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "make_test_model.py")
    spec = importlib.util.spec_from_file_location("make_test_model", tool_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    hf_cfg, state = variant_state(FIXTURE_DIR, variant)
    saved = reference_data(FIXTURE_DIR, variant)
    fresh = tool.hf_reference(hf_cfg, state, saved["prompt_tokens"].tolist())
    assert set(fresh) == set(saved)
    for name, value in saved.items():
        scale = max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(fresh[name], value, atol=1e-5 * scale, rtol=0, err_msg=name)
