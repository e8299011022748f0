"""Reference model memory: prefill/decode agreement, exact rollback of KV + GDN state, snapshot/restore."""

import numpy as np
import pytest

from vkmtp.ref import ModelState, ReferenceModel

PROMPT = [5, 77, 301, 12, 9, 440, 18, 2, 250, 33]
MORE = [61, 7, 400, 121]


def assert_same_state(a: ModelState, b: ModelState) -> None:
    assert a.n_past == b.n_past
    for layer in a.kv:
        np.testing.assert_array_equal(a.kv[layer].k, b.kv[layer].k)
        np.testing.assert_array_equal(a.kv[layer].v, b.kv[layer].v)
    for layer in a.recurrent:
        np.testing.assert_array_equal(a.recurrent[layer].conv, b.recurrent[layer].conv)
        np.testing.assert_array_equal(a.recurrent[layer].ssm, b.recurrent[layer].ssm)


@pytest.fixture(scope="module", params=["dense", "moe"])
def model(request, tiny_gguf):
    return ReferenceModel.from_gguf(tiny_gguf(request.param))


def test_state_layout(model):
    cfg = model.cfg
    state = model.new_state()
    assert sorted(state.kv) == list(cfg.attention_layers) == [3]
    assert sorted(state.recurrent) == list(cfg.recurrent_layers) == [0, 1, 2]
    gdn = state.recurrent[0]
    assert gdn.conv.shape == (cfg.ssm_conv_kernel - 1, cfg.ssm_conv_dim)
    assert gdn.ssm.shape == (cfg.ssm_dt_rank, cfg.ssm_head_v_dim, cfg.ssm_d_state)


def test_prefill_equals_token_by_token_decode(model):
    batch_state, step_state = model.new_state(), model.new_state()
    logits, hidden = model.forward(PROMPT, batch_state)
    for i, token in enumerate(PROMPT):
        step_logits, step_hidden = model.forward([token], step_state)
        np.testing.assert_array_equal(step_logits[0], logits[i])
        np.testing.assert_array_equal(step_hidden[0], hidden[i])
    assert_same_state(batch_state, step_state)


@pytest.mark.parametrize("keep", [1, 2, 3, 4])
def test_rollback_restores_exactly(model, keep):
    state = model.new_state()
    model.forward(PROMPT, state)
    model.forward(MORE, state, keep_steps=len(MORE))
    state.rollback(len(PROMPT) + keep)
    expected = model.new_state()
    model.forward(PROMPT + MORE[:keep], expected)
    assert_same_state(state, expected)
    # and the next token sees the same model
    a, _ = model.forward([99], state)
    b, _ = model.forward([99], expected)
    np.testing.assert_array_equal(a, b)


def test_rollback_outside_recorded_steps_fails(model):
    state = model.new_state()
    model.forward(PROMPT, state)
    model.forward(MORE, state, keep_steps=2)
    with pytest.raises(ValueError, match="no recorded recurrent state"):
        state.rollback(len(PROMPT) + 1)
    with pytest.raises(ValueError, match="cannot roll back"):
        state.rollback(len(PROMPT) + len(MORE) + 1)


def test_snapshot_restore_is_exact_and_reusable(model):
    state = model.new_state()
    model.forward(PROMPT, state)
    snap = state.snapshot()
    first, _ = model.forward(MORE, state)
    state.restore(snap)
    again, _ = model.forward(MORE, state)
    np.testing.assert_array_equal(first, again)
    state.restore(snap)
    assert state.n_past == len(PROMPT)


def test_mtp_state_rollback_truncates(model):
    mtp_state = model.new_mtp_state()
    h = np.zeros((len(PROMPT), model.cfg.n_embd), np.float32)
    model.mtp_forward(PROMPT, h, mtp_state)
    mtp_state.rollback(4)
    assert mtp_state.n_past == 4 and mtp_state.kv.k.shape[0] == 4
    with pytest.raises(ValueError):
        mtp_state.rollback(5)


def test_bad_tokens_are_rejected(model):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.forward([model.cfg.n_vocab], model.new_state())
    with pytest.raises(ValueError, match="no tokens"):
        model.forward([], model.new_state())
