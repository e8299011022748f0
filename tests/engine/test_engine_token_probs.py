"""Token probabilities (logprobs / n_probs / post_sampling_probs) of the Vulkan engine against the reference
engine on the embedded demo model: greedy and seeded sampled runs, MTP on and off, within 1e-3."""

from __future__ import annotations

import pytest

from vkmtp.demo_model import default_model_path
from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.engine.token_probs import ProbsRequest
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.graph.token_probs import ROW_WORDS
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

PROMPT = [11, 402, 77, 1290, 35, 260, 9, 3001, 512, 64, 18, 777]
N = 12
GREEDY = SamplingParams.greedy_params()
SAMPLED = SamplingParams(temperature=0.9, seed=7)
TOL = 1e-3


def _config(mtp: bool) -> EngineConfig:
    return EngineConfig(n_ctx=128, ubatch=32, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False))


@pytest.fixture(scope="module")
def engines(device):
    path = default_model_path()
    made = {}
    for mtp in (False, True):
        made["vulkan", mtp] = VulkanEngine(path, _config(mtp), device=device)
        made["reference", mtp] = ReferenceEngine(path, _config(mtp))
    yield made
    for eng in made.values():
        eng.close()


def generate(engine, params, probs: ProbsRequest, n: int = N):
    seq = engine.submit(Request(list(PROMPT), params, max_tokens=n, probs=probs))
    events = []
    while not seq.done:
        events += [ev for ev in engine.step() if ev.seq is seq]
    from_events = [p for ev in events for p in (ev.probs or [])]
    assert from_events == seq.probs   # the events carry each new token's probabilities once
    if engine.config.spec.enabled and n > 4:   # MTP on: speculative steps ran and kept drafts
        assert seq.spec.draft_n_accepted > 0
    return seq.generated, seq.probs


def assert_probs_close(got, want, n_top):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.id == w.id and g.post_sampling == w.post_sampling
        assert abs(g.value - w.value) < TOL, (g, w)
        assert len(g.top) == len(w.top) == min(n_top, len(w.top))
        gd, wd = dict(g.top), dict(w.top)
        for tid in gd.keys() & wd.keys():
            assert abs(gd[tid] - wd[tid]) < TOL, (tid, g, w)
        # a near-tie at the n-th place may pick another id: only there may the sets differ
        edge = min(v for _, v in w.top) if w.top else 0.0
        for tid in gd.keys() ^ wd.keys():
            assert abs(gd.get(tid, wd.get(tid)) - edge) < TOL, (tid, g, w)
        assert [v for _, v in g.top] == sorted((v for _, v in g.top), reverse=True)


@pytest.mark.parametrize("mtp", [False, True], ids=["no-mtp", "mtp"])
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_logprobs_match_the_reference_engine(engines, mtp, params):
    probs = ProbsRequest(n_top=5)
    tokens, got = generate(engines["vulkan", mtp], params, probs)
    want_tokens, want = generate(engines["reference", mtp], params, probs)
    assert tokens == want_tokens and len(got) == len(tokens)
    assert_probs_close(got, want, 5)
    for p in got:
        assert p.value <= 1e-6 and all(v <= 1e-6 for _, v in p.top)
        if params is GREEDY:   # the argmax is the most likely token
            assert p.top[0][0] == p.id and abs(p.top[0][1] - p.value) < 1e-6


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_mtp_on_and_off_give_the_same_probabilities(engines, params):
    """The probabilities of the verified positions of a speculative step are those of plain decoding."""
    probs = ProbsRequest(n_top=20)
    tokens_on, on = generate(engines["vulkan", True], params, probs)
    tokens_off, off = generate(engines["vulkan", False], params, probs)
    assert tokens_on == tokens_off
    assert_probs_close(on, off, 20)


@pytest.mark.parametrize("mtp", [False, True], ids=["no-mtp", "mtp"])
def test_post_sampling_probs(engines, mtp):
    """After the sampler chain: greedy gives the chosen token p = 1; sampled gives the renormalised
    probabilities of the chain's candidates (top_k 40 / top_p / min_p / temperature), as the reference has them."""
    probs = ProbsRequest(n_top=3, post_sampling=True)
    _, greedy = generate(engines["vulkan", mtp], GREEDY, probs, n=4)
    assert all(p.value == 1.0 and p.top == ((p.id, 1.0),) for p in greedy)
    tokens, got = generate(engines["vulkan", mtp], SAMPLED, probs)
    want_tokens, want = generate(engines["reference", mtp], SAMPLED, probs)
    assert tokens == want_tokens
    assert_probs_close(got, want, 3)
    for p in got:
        assert 0.0 < p.value <= 1.0 and sum(v for _, v in p.top) <= 1.0 + 1e-6


def test_requests_without_probabilities_read_no_more(engines):
    """A request that asks for nothing gets no probabilities and its steps keep their graph (no probs
    variant recorded)."""
    eng = engines["vulkan", True]
    tokens, probs = generate(eng, GREEDY, None)
    assert probs == [] and len(tokens) == N
    keys = [k for k in eng._graphs if k[0] in ("decode", "spec", "prefill")]
    assert any(k[-1] is False for k in keys)


def test_greedy_probabilities_read_a_few_words_per_token(engines):
    """Greedy logits stay on the GPU: with probabilities the host reads 2 * 20 + 2 words per token more, not
    the row (the whole run reads less than one logits row more)."""
    eng = engines["vulkan", True]
    before = eng.host_bytes_read
    generate(eng, GREEDY, None)
    plain = eng.host_bytes_read - before
    before = eng.host_bytes_read
    generate(eng, GREEDY, ProbsRequest(n_top=20))
    extra = eng.host_bytes_read - before - plain
    assert 0 < extra < 4 * eng.n_vocab
    assert extra % (4 * ROW_WORDS) == 0


@pytest.mark.parametrize("mtp", [False, True], ids=["no-mtp", "mtp"])
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_batched_sequences_each_get_their_own_rows(device, engines, mtp, params):
    """Two sequences in one step, one asking for probabilities: its rows are its own (decode rows s,
    speculative rows s * (K + 1) + j), and the other gets none."""
    eng = VulkanEngine(default_model_path(), EngineConfig(n_ctx=128, n_slots=2, ubatch=32, spec=SpecConfig(
        enabled=mtp, n_max=3, adaptive=False)), device=device)
    try:
        probs = ProbsRequest(n_top=4)
        other = eng.submit(Request([5, 6, 7, 8, 9, 10], params, max_tokens=N))
        seq = eng.submit(Request(list(PROMPT), params, max_tokens=N, probs=probs))
        while not (seq.done and other.done):
            eng.step()
    finally:
        eng.close()
    assert other.probs == []
    want_tokens, want = generate(engines["reference", mtp], params, probs)
    assert seq.generated == want_tokens
    assert_probs_close(seq.probs, want, 4)


def test_probs_request_bounds():
    with pytest.raises(ValueError, match="n_top 21"):
        ProbsRequest(n_top=21)
    with pytest.raises(ValueError, match="n_top -1"):
        ProbsRequest(n_top=-1)
