#!/usr/bin/env python3
"""MTP benchmark against any llama-server compatible URL, in the manner of the community's `mtp-bench.py`.

Nine prompts of the usual kinds (code, explanation, summary, QA, translation, poem, arithmetic, code review)
written for this tool, sent one after another as non-streaming /v1/chat/completions requests with
max_tokens 192 and seed 42 and no temperature (the server's default applies). Read from each response:
usage.completion_tokens, timings.predicted_per_second, timings.draft_n, timings.draft_n_accepted (the draft
fields are absent without speculative decoding and count as 0).

    python tools/mtp_bench.py --url http://127.0.0.1:8080 [--out run.json] [--compare http://host:8081]
    python tools/mtp_bench.py --diff base.json mtp.json

Only the standard library is needed; --plot uses matplotlib when it is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

PROMPTS: list[tuple[str, str]] = [
    (
        "code_python",
        "Write a Python function that returns the n-th Fibonacci number using memoization. "
        "Include a docstring and a short usage example.",
    ),
    (
        "code_cpp",
        "Write a C++ function template `clamp_value(x, lo, hi)` that limits x to the range "
        "[lo, hi] without using std::clamp. Add a small main() that tests it.",
    ),
    (
        "explain_concept",
        "In three short paragraphs, explain how speculative decoding makes a language model "
        "generate text faster without changing what it generates.",
    ),
    (
        "summarize",
        "Summarize in two sentences: The printing press, developed around 1440, made books cheaper "
        "and faster to produce. Ideas spread across Europe within decades, literacy rose, and "
        "scholars could compare identical copies of texts, which helped the scientific revolution.",
    ),
    ("qa_factual", "Q: Which planets of the solar system are gas giants, and which is the largest?\nA:"),
    (
        "translation",
        "Translate into German: 'The library opens at nine in the morning and closes at six in "
        "the evening, except on Sundays.'",
    ),
    ("creative_short", "Write a four-line poem about a train crossing a snowy valley at night."),
    (
        "stepwise_math",
        "A tank holds 120 litres. One pipe fills it at 8 litres per minute while another drains "
        "it at 3 litres per minute. Starting empty, how long until it is full? Solve step by step.",
    ),
    (
        "long_code_review",
        "Review the following service for performance problems and suggest concrete fixes.\n\n"
        "System: a Flask API in front of a MySQL database serves product searches for an online shop. Under "
        "normal load the median latency is 40 ms, but every few minutes requests take 3 to 8 seconds. "
        "The service runs four worker processes on one machine; the database runs on another machine "
        "in the same rack.\n\n"
        "Code excerpt:\n```python\n"
        "@app.route('/search')\n"
        "def search():\n"
        "    term = request.args.get('q', '')\n"
        "    conn = mysql.connector.connect(**DB_SETTINGS)\n"
        "    cur = conn.cursor()\n"
        '    cur.execute("SELECT * FROM products WHERE name LIKE \'%" + term + "%\'")\n'
        "    rows = cur.fetchall()\n"
        "    results = []\n"
        "    for row in rows:\n"
        "        cur.execute('SELECT AVG(stars) FROM reviews WHERE product_id = %s', (row[0],))\n"
        "        rating = cur.fetchone()[0]\n"
        "        results.append({'id': row[0], 'name': row[1], 'price': row[2], 'rating': rating})\n"
        "    results.sort(key=lambda r: r['rating'] or 0, reverse=True)\n"
        "    return jsonify(results[:20])\n"
        "```\n\n"
        "Schema notes: products has 2 million rows with an index on id only; reviews has 30 million rows "
        "with an index on (id) and no index on product_id. A nightly job rebuilds a search cache table but "
        "the endpoint "
        "does not use it. The connection pool size is not configured.\n\n"
        "List the problems in order of impact, explain why each one causes the latency spikes, and show the "
        "corrected code.",
    ),
]


def post_chat(
    url: str,
    prompt: str,
    model: str,
    max_tokens: int,
    seed: int,
    timeout: float,
    api_key: str | None,
    temperature: float | None,
) -> tuple[dict, float]:
    """One non-streaming chat request; returns (response JSON, wall seconds)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "seed": seed,
    }
    if temperature is not None:
        body["temperature"] = temperature
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/chat/completions", json.dumps(body).encode(), headers
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"mtp_bench: {url} answered {exc.code}: {exc.read()[:500].decode(errors='replace')}")
    except urllib.error.URLError as exc:
        raise SystemExit(f"mtp_bench: cannot reach {url}: {exc.reason}")
    return data, time.perf_counter() - t0


def measure(name: str, data: dict, wall_s: float) -> dict:
    """The per-prompt record, read the way the community script reads it."""
    timings = data.get("timings") or {}
    predicted = (data.get("usage") or {}).get("completion_tokens")
    if predicted is None:
        predicted = timings.get("predicted_n", 0)
    pps = timings.get("predicted_per_second")
    if pps is None:
        pps = predicted / wall_s if wall_s > 0 else 0.0
    draft_n = int(timings.get("draft_n", 0) or 0)
    accepted = int(timings.get("draft_n_accepted", 0) or 0)
    return {
        "name": name,
        "wall_s": round(wall_s, 3),
        "predicted_n": int(predicted),
        "predicted_per_second": float(pps),
        "draft_n": draft_n,
        "draft_n_accepted": accepted,
        "accept_rate": round(accepted / draft_n, 4) if draft_n else None,
    }


def aggregate(results: list[dict]) -> dict:
    total_draft = sum(r["draft_n"] for r in results)
    total_accepted = sum(r["draft_n_accepted"] for r in results)
    rates = [r["predicted_per_second"] for r in results]
    return {
        "n_requests": len(results),
        "total_predicted": sum(r["predicted_n"] for r in results),
        "total_draft": total_draft,
        "total_draft_accepted": total_accepted,
        "aggregate_accept_rate": round(total_accepted / total_draft, 4) if total_draft else None,
        "mean_predicted_per_second": round(sum(rates) / len(rates), 2) if rates else None,
        "wall_s_total": round(sum(r["wall_s"] for r in results), 2),
    }


def format_line(r: dict) -> str:
    rate = f"{r['accept_rate']:.3f}" if r["accept_rate"] is not None else "n/a"
    return (
        f"  {r['name']:<18} pred={r['predicted_n']:>4} draft={r['draft_n']:>4} "
        f"acc={r['draft_n_accepted']:>4} rate={rate} tok/s={r['predicted_per_second']:.1f}"
    )


def run(url: str, args: argparse.Namespace, out=None) -> dict:
    """Send the prompts to one server; print a line per prompt and the aggregate."""
    out = out or sys.stdout
    print(f"{url}:", file=out)
    results = []
    for name, prompt in PROMPTS[: args.prompts]:
        data, wall_s = post_chat(
            url, prompt, args.model, args.max_tokens, args.seed, args.timeout, args.api_key, args.temperature
        )
        results.append(measure(name, data, wall_s))
        print(format_line(results[-1]), file=out, flush=True)
    agg = aggregate(results)
    print("Aggregate:\n" + json.dumps(agg, indent=2), file=out)
    return {"url": url, "results": results, "aggregate": agg}


def _ratio(b: float | None, a: float | None) -> str:
    return f"{b / a:.2f}x" if a and b is not None else "n/a"


def compare(a: dict, b: dict, out=None) -> list[dict]:
    """Per-prompt and aggregate tok/s ratios of run b over run a, and acceptance of each."""
    out = out or sys.stdout
    rows = []
    print(f"\nComparison ({b.get('url', 'B')} / {a.get('url', 'A')}):", file=out)
    print(f"  {'prompt':<18} {'tok/s A':>9} {'tok/s B':>9} {'B/A':>7} {'acc A':>7} {'acc B':>7}", file=out)
    for ra, rb in zip(a["results"], b["results"]):
        acc = lambda r: f"{r['accept_rate']:.3f}" if r["accept_rate"] is not None else "n/a"  # noqa: E731
        ratio = (
            rb["predicted_per_second"] / ra["predicted_per_second"] if ra["predicted_per_second"] else None
        )
        rows.append({"name": ra["name"], "ratio": ratio})
        print(
            f"  {ra['name']:<18} {ra['predicted_per_second']:>9.1f} {rb['predicted_per_second']:>9.1f} "
            f"{_ratio(rb['predicted_per_second'], ra['predicted_per_second']):>7} {acc(ra):>7} {acc(rb):>7}",
            file=out,
        )
    ma, mb = a["aggregate"]["mean_predicted_per_second"], b["aggregate"]["mean_predicted_per_second"]
    print(f"  {'mean':<18} {ma or 0:>9.1f} {mb or 0:>9.1f} {_ratio(mb, ma):>7}", file=out)
    return rows


def plot(runs: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("mtp_bench: matplotlib is not installed; no plot written", file=sys.stderr)
        return
    names = [r["name"] for r in runs[0]["results"]]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(10, 4))
    for i, run_ in enumerate(runs):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(
            xs, [r["predicted_per_second"] for r in run_["results"]], width, label=run_.get("url", f"run {i}")
        )
    ax.set_xticks(
        [j + width * (len(runs) - 1) / 2 for j in range(len(names))], names, rotation=30, ha="right"
    )
    ax.set_ylabel("decode tok/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument(
        "--compare", metavar="URL2", help="run the same prompts on a second server and show ratios"
    )
    ap.add_argument("--diff", nargs=2, metavar=("A.json", "B.json"), help="compare two saved --out files")
    ap.add_argument("--model", default="llama", help="model field sent (servers with one model ignore it)")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="run only the first N prompts")
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--temperature", type=float, default=None, help="send a temperature (default: none)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", help="write the results as JSON")
    ap.add_argument("--plot", help="write a bar chart of tok/s per prompt (needs matplotlib)")
    args = ap.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        ap.error(f"--prompts must be in 1..{len(PROMPTS)}")
    if args.diff:
        runs = []
        for path in args.diff:
            with open(path, encoding="utf-8") as fh:
                runs.append(json.load(fh))
        compare(runs[0], runs[1])
    else:
        runs = [run(args.url, args)]
        if args.compare:
            runs.append(run(args.compare, args))
            compare(runs[0], runs[1])
    if args.out:
        report = runs[0] if len(runs) == 1 else {"runs": runs}
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    if args.plot:
        plot(runs, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
