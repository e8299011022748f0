"""Per-request speculative settings on the live server: `speculative.n_max` / `n_min` / `p_min` (llama-server's
/completion names) change that request's drafting, never its tokens; values the engine cannot honour are 400s."""


def completion(server, **extra):
    body = {"prompt": "Count: one two three", "n_predict": 16, "cache_prompt": False, **extra}
    return server.http.post("/completion", json=body)


def test_request_n_max_caps_the_drafts_and_keeps_the_tokens(mtp_server):
    default = completion(mtp_server).json()
    one = completion(mtp_server, **{"speculative.n_max": 1}).json()
    assert one["content"] == default["content"]
    t = one["timings"]
    # at most one draft per verify step: drafts <= generated tokens after the first (from the prompt)
    assert 0 < t["draft_n"] <= t["predicted_n"] - 1
    assert default["timings"]["draft_n"] > t["draft_n"]
    # p-min / n-min reach the engine the same way (their effect on drafts: tests/engine, against the reference)
    sure = completion(mtp_server, **{"speculative.p_min": 0.9, "speculative.n_min": 1}).json()
    assert sure["content"] == default["content"]


def test_bad_speculative_settings_are_400s_naming_the_field(mtp_server):
    for extra, word in (({"speculative.n_max": 5}, "speculative.n_max"), ({"speculative.n_max": 9}, "n_max"),
                        ({"speculative.n_max": 2, "speculative.n_min": 3}, "speculative.n_min"),
                        ({"speculative.p_min": 1.5}, "p_min"), ({"speculative.n_max": "2"}, "n_max")):
        r = completion(mtp_server, **extra)
        assert r.status_code == 400, (extra, r.text)
        assert word in r.text, (extra, r.text)
