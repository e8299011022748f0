"""Reference generation and llama.cpp's draft-mtp loop: MTP output == plain output, acceptance statistics,
the MTP KV cache mirrors the committed prefix."""

import numpy as np
import pytest

from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate, generate_mtp
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

PROMPTS = [[10, 20, 30, 40, 50], list(range(100, 120))]
N_TOKENS = 32


@pytest.mark.parametrize(
    "variant,file_type",
    [
        ("dense", "f32"),
        ("moe", "f32"),
        ("aligned", "f32"),
        ("dense", "q4_0"),
        ("moe", "q4_0"),
        ("aligned", "q4_0"),
    ],
)
def test_greedy_mtp_equals_plain_decoding(tiny_gguf, variant, file_type):
    model = ReferenceModel.from_gguf(tiny_gguf(variant, file_type))
    drafted = accepted = 0
    for prompt in PROMPTS:
        plain = generate(model, prompt, N_TOKENS)
        spec = generate_mtp(model, prompt, N_TOKENS)
        assert spec.tokens == plain.tokens
        assert spec.stop_reason == plain.stop_reason == "max_tokens"
        drafted += spec.stats.draft_n
        accepted += spec.stats.draft_n_accepted
    print(f"\n{variant} {file_type}: MTP accepted {accepted}/{drafted} = {accepted / drafted:.0%}")
    if variant == "aligned":  # built so both the accept and the reject path run
        assert 0.2 < accepted / drafted < 0.95


def test_f16_kv_cache_mtp_equals_plain(tiny_gguf):
    model = ReferenceModel.from_gguf(tiny_gguf("aligned"))
    plain = generate(model, PROMPTS[1], 16, kv_dtype=np.float16)
    spec = generate_mtp(model, PROMPTS[1], 16, kv_dtype=np.float16)
    assert spec.tokens == plain.tokens and spec.mtp_state.kv.k.dtype == np.float16


def test_seeded_sampling_with_mtp_equals_plain_sampling(tiny_gguf):
    model = ReferenceModel.from_gguf(tiny_gguf("aligned"))
    params = SamplingParams(temperature=1.0, repeat_penalty=1.1, seed=42)
    plain = generate(model, PROMPTS[0], N_TOKENS, params)
    spec = generate_mtp(model, PROMPTS[0], N_TOKENS, params)
    assert spec.tokens == plain.tokens
    assert spec.stats.draft_n_accepted > 0


def test_mtp_memory_mirrors_committed_prefix(tiny_gguf):
    model = ReferenceModel.from_gguf(tiny_gguf("aligned"))
    prompt = PROMPTS[1]
    result = generate_mtp(model, prompt, 25)
    committed = prompt + result.tokens[:-1]
    fresh = model.new_state()
    _, hidden = model.forward(committed, fresh)
    assert result.state.n_past == fresh.n_past == len(committed)
    for layer in fresh.kv:
        np.testing.assert_array_equal(result.state.kv[layer].k, fresh.kv[layer].k)
    for layer in fresh.recurrent:
        np.testing.assert_array_equal(result.state.recurrent[layer].ssm, fresh.recurrent[layer].ssm)
        np.testing.assert_array_equal(result.state.recurrent[layer].conv, fresh.recurrent[layer].conv)
    mtp_fresh = model.new_mtp_state()
    h_prev = np.concatenate([np.zeros((1, hidden.shape[1]), np.float32), hidden[:-1]])
    model.mtp_forward(committed, h_prev, mtp_fresh)
    np.testing.assert_array_equal(result.mtp_state.kv.k, mtp_fresh.kv.k)
    np.testing.assert_array_equal(result.mtp_state.kv.v, mtp_fresh.kv.v)


def test_stop_token_and_budget(tiny_gguf):
    model = ReferenceModel.from_gguf(tiny_gguf("aligned"))
    free = generate(model, PROMPTS[0], 12)
    stop = free.tokens[5]
    for run in (generate, generate_mtp):
        result = run(model, PROMPTS[0], 12, stop_tokens=[stop])
        assert result.stop_reason == "stop_token"
        assert result.tokens == free.tokens[: free.tokens.index(stop)]
        assert len(run(model, PROMPTS[0], 1).tokens) == 1


def test_draft_length_and_statistics(tiny_gguf):
    model = ReferenceModel.from_gguf(tiny_gguf("aligned"))
    result = generate_mtp(model, PROMPTS[0], N_TOKENS, spec=SpecConfig(n_max=2))
    stats = result.stats
    assert len(stats.drafted_per_pos) == 2
    assert stats.draft_n == sum(stats.drafted_per_pos)
    assert stats.draft_n_accepted == sum(stats.accepted_per_pos)
    assert all(a <= d for a, d in zip(stats.accepted_per_pos, stats.drafted_per_pos))
    assert stats.accepted_per_pos == sorted(stats.accepted_per_pos, reverse=True)
    # every step emits its accepted drafts plus one token; the first token comes from the prompt
    assert len(result.tokens) <= 1 + stats.steps + stats.draft_n_accepted + 1


def test_p_min_one_disables_drafting(tiny_gguf):
    model = ReferenceModel.from_gguf(tiny_gguf("dense"))
    result = generate_mtp(model, PROMPTS[0], 8, spec=SpecConfig(p_min=1.0))
    assert result.stats.draft_n == 0
    assert result.tokens == generate(model, PROMPTS[0], 8).tokens


def test_model_without_mtp_runs_and_refuses_speculation(tiny_gguf):
    model = ReferenceModel.from_gguf(tiny_gguf("dense", mtp=False))
    assert not model.has_mtp and model.cfg.n_nextn == 0
    with_mtp = ReferenceModel.from_gguf(tiny_gguf("dense"))
    assert generate(model, PROMPTS[0], 6).tokens == generate(with_mtp, PROMPTS[0], 6).tokens
    with pytest.raises(ValueError, match="no MTP block"):
        generate_mtp(model, PROMPTS[0], 6)
