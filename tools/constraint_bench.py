"""Per-token cost of three constraint engines (llguidance, xgrammar, outlines-core) at a given vocabulary size.

The vocabulary is the synthetic byte-level BPE of tools/make_synthetic_model.py (the real Qwen3.5 size, 248320
ids, by default): bytes, byte pairs, byte triples and the ChatML specials. For each engine and each grammar
(a JSON schema and a GBNF grammar) it measures: building the engine's tokenizer, compiling the grammar, then, while
feeding a valid answer token by token, the time of each next-token mask (a bit mask of n_vocab bits) and of
accepting the token. It also checks correctness on the way: every token of the valid answer must be allowed by
the mask, and after the answer only the end-of-generation id may be.

The engines that are not installed are skipped (only llguidance is a vkmtp dependency; see docs/CONSTRAINED.md
for how the others were installed).

  python tools/constraint_bench.py [--vocab 248320] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tools.make_synthetic_model import vocabulary   # noqa: E402
from vkmtp.text.tokenizer import Tokenizer   # noqa: E402

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city", "zip"], "additionalProperties": False}},
    "required": ["name", "age", "tags", "address"], "additionalProperties": False}
ANSWER = '{"name":"Ada Lovelace","age":36,"tags":["math","engines"],"address":{"city":"London","zip":"W1"}}'
GBNF = r'''root ::= "SELECT " cols " FROM " ident (" WHERE " cond)? ";"
cols ::= ident (", " ident)*
ident ::= [a-z_] [a-z0-9_]*
cond ::= ident " = " [0-9]+'''
GBNF_ANSWER = "SELECT name, age FROM people WHERE id = 42;"


def synthetic_tokenizer(n_vocab: int) -> Tokenizer:
    tokens, types, merges = vocabulary(n_vocab)
    return Tokenizer(tokens, types, merges, pre="qwen35", eos_id=tokens.index("<|im_end|>"))


def _ms(t0: float) -> float:
    return 1e3 * (time.perf_counter() - t0)


def _bits(mask_bytes: bytes | np.ndarray, n_vocab: int) -> np.ndarray:
    raw = np.frombuffer(np.asarray(mask_bytes).tobytes() if isinstance(mask_bytes, np.ndarray) else mask_bytes,
                        np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n_vocab].astype(bool)


def _summary(name, grammar, build_ms, compile_ms, masks, accepts, ok) -> dict:
    return {"engine": name, "grammar": grammar, "tokenizer_build_ms": round(build_ms, 1),
            "compile_ms": round(compile_ms, 1), "mask_ms_median": round(statistics.median(masks), 3),
            "mask_ms_max": round(max(masks), 3), "accept_ms_median": round(statistics.median(accepts), 3),
            "tokens": len(masks) - 1, "correct": ok}


def bench_llguidance(tok: Tokenizer, n_vocab: int, eos: int, cases) -> list[dict]:
    import llguidance

    from vkmtp.constrain.grammar import from_gbnf, from_json_schema
    from vkmtp.constrain.vocab import ll_tokenizer

    t0 = time.perf_counter()
    ll = ll_tokenizer(tok, n_vocab, frozenset({eos}))
    build = _ms(t0)
    out = []
    for label, kind, source, ids in cases:
        t0 = time.perf_counter()
        grammar = from_json_schema(source, "bench") if kind == "json" else from_gbnf(source)
        matcher = llguidance.LLMatcher(ll, grammar.text, log_level=0)
        comp = _ms(t0)
        masks, accepts, ok = [], [], True
        for i, token in enumerate(ids + [eos]):
            t0 = time.perf_counter()
            allowed = _bits(matcher.compute_bitmask(), n_vocab)
            masks.append(_ms(t0))
            ok &= bool(allowed[token]) and (token != eos or int(allowed.sum()) == 1)
            t0 = time.perf_counter()
            matcher.consume_token(token)
            accepts.append(_ms(t0))
        out.append(_summary("llguidance", label, build, comp, masks, accepts, ok))
    return out


def bench_xgrammar(tok: Tokenizer, n_vocab: int, eos: int, cases) -> list[dict]:
    import xgrammar as xgr   # its bit masks are torch tensors

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo([tok.token_bytes(i) for i in range(len(tok.tokens))], xgr.VocabType.RAW,
                             vocab_size=n_vocab, stop_token_ids=[eos])
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    build = _ms(t0)
    out = []
    for label, kind, source, ids in cases:
        t0 = time.perf_counter()
        if kind == "json":   # compact separators, as llguidance writes JSON here
            compiled = compiler.compile_json_schema(json.dumps(source), any_whitespace=False, separators=(",", ":"))
        else:
            compiled = compiler.compile_grammar(source)
        matcher = xgr.GrammarMatcher(compiled)
        comp = _ms(t0)
        bitmask = xgr.allocate_token_bitmask(1, n_vocab)
        masks, accepts, ok = [], [], True
        for token in ids + [eos]:
            t0 = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            masks.append(_ms(t0))
            allowed = _bits(bitmask[0].numpy(), n_vocab)
            ok &= bool(allowed[token]) and (token != eos or int(allowed.sum()) == 1)
            t0 = time.perf_counter()
            matcher.accept_token(token)
            accepts.append(_ms(t0))
        out.append(_summary("xgrammar", label, build, comp, masks, accepts, ok))
    return out


def bench_outlines(tok: Tokenizer, n_vocab: int, eos: int, cases) -> list[dict]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    t0 = time.perf_counter()
    table: dict[bytes, list[int]] = {}
    for i in range(len(tok.tokens)):
        if i != eos and tok.token_types[i] == 1:
            table.setdefault(tok.token_bytes(i), []).append(i)
    vocab = Vocabulary(eos, table)
    build = _ms(t0)
    out = []
    for label, kind, source, ids in cases:
        if kind != "json":
            out.append({"engine": "outlines-core", "grammar": label, "supported": False})
            continue
        t0 = time.perf_counter()
        index = Index(build_regex_from_schema(json.dumps(source)), vocab)
        guide = Guide(index)
        comp = _ms(t0)
        mask = np.zeros((n_vocab + 31) // 32, np.uint32)
        masks, accepts, ok = [], [], True
        for token in ids + [eos]:
            t0 = time.perf_counter()
            guide.write_mask_into(mask.ctypes.data, mask.size, 4)
            masks.append(_ms(t0))
            allowed = _bits(mask, n_vocab)
            ok &= bool(allowed[token])
            if token == eos:
                break
            t0 = time.perf_counter()
            guide.advance(token)
            accepts.append(_ms(t0))
        out.append(_summary("outlines-core", label, build, comp, masks, accepts, ok))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=248320)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--engines", default="llguidance,xgrammar,outlines_core")
    args = ap.parse_args(argv)
    tok = synthetic_tokenizer(args.vocab)
    eos = tok.eos_id
    cases = [("json_schema", "json", SCHEMA, tok.encode(ANSWER, add_special=False)),
             ("gbnf", "gbnf", GBNF, tok.encode(GBNF_ANSWER, add_special=False))]
    results = []
    for name in args.engines.split(","):
        if importlib.util.find_spec(name) is None:
            print(f"{name}: not installed, skipped", file=sys.stderr)
            continue
        bench = {"llguidance": bench_llguidance, "xgrammar": bench_xgrammar, "outlines_core": bench_outlines}[name]
        try:
            results += bench(tok, args.vocab, eos, cases)
        except Exception as exc:   # an engine that fails on a case is a result, not a crash of the benchmark
            results.append({"engine": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
    for r in results:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"vocab": args.vocab, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
