"""`-c 0`: the largest context that fits, up to the model's trained context, chosen before anything is allocated.

Through the CLI (`vkmtp generate`), on the embedded demo model and on the 0.8B real-shape synthetic model; a budget
forced small with --fit-target (the margin left free) makes the plan fail, with the plan in the message, before
any device buffer exists.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from vkmtp.cli.main import main
from vkmtp.device import Device

ROOT = Path(__file__).resolve().parents[2]


def _fitted(stderr: str) -> int:
    m = re.search(r"fit: context (\d+) tokens per slot", stderr)
    assert m, stderr
    return int(m.group(1))


def test_ctx_zero_picks_prints_and_runs_on_the_demo_model(capsys):
    assert main(["generate", "-c", "0", "-p", "hello", "-n", "3", "--temp", "0", "--json"]) == 0
    captured = capsys.readouterr()
    n_ctx = _fitted(captured.err)
    report = json.loads(captured.out)
    # the demo model's trained context fits lavapipe's heap: -c 0 is all of it, and the engine ran with it
    assert report["n_ctx"] == n_ctx >= 256 and "the model's trained context" in captured.err
    assert len(report["tokens"]) == 3 and report["memory"]["planned_bytes"] > 0


def test_a_plan_that_cannot_fit_fails_before_allocation_with_the_plan(capsys, monkeypatch):
    allocations = []
    real_buffer = Device.buffer

    def counting_buffer(self, *args, **kw):
        allocations.append(args)
        return real_buffer(self, *args, **kw)

    monkeypatch.setattr(Device, "buffer", counting_buffer)
    # a margin larger than any device's memory (the budget is what is available less the margin): nothing fits.
    # (On a CPU device what is available is the host's free memory, which moves: only a zero budget is exact.)
    rc = main(["generate", "-c", "0", "-p", "hello", "-n", "3", "--temp", "0", "--fit-target", str(1 << 30)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "but 0.0 MiB is available" in err, err
    for row in ("weights", "KV cache", "recurrent state", "scratch", "total", "reduce with"):
        assert row in err, err
    assert allocations == []


@pytest.mark.slow   # writing the 0.8B model (0.4 GiB) and one prefill at ~40k context: minutes on lavapipe
def test_ctx_zero_on_the_0_8b_real_shape_model(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_synthetic_model
    finally:
        sys.path.remove(str(ROOT / "tools"))
    path = str(tmp_path / "syn-0.8b.gguf")
    assert make_synthetic_model.main([path, "--preset", "0.8b", "--type", "q4_k"]) == 0
    capsys.readouterr()
    assert main(["generate", "-m", path, "-c", "0", "-p", "hello there", "-n", "2", "--temp", "0"]) == 0
    err = capsys.readouterr().err
    n_ctx = _fitted(err)
    # up to the trained context (262144): all of it where it fits, else the largest multiple of 256 that does
    assert 4096 <= n_ctx <= 262144
    assert ("the model's trained context" in err) if n_ctx == 262144 else \
        (n_ctx % 256 == 0 and "the largest that fits" in err), err


def test_info_plans_the_slots_asked_for(capsys):
    """`vkmtp info -np 4` plans four slots (KV, states and MTP KV of each), not one."""
    from vkmtp.demo_model import default_model_path

    assert main(["info", default_model_path(), "-c", "4096", "-np", "4"]) == 0
    out = capsys.readouterr()
    assert "ctx 4096, 4 slot(s)" in out.out and "KV cache (f16, 4 x 4096 tokens)" in out.out
    assert "-np 4" not in out.err
