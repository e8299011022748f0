"""`vkmtp generate -dev 0,0 -ts 3,1`: the demo model split by layers over lavapipe opened twice prints the text one
device prints, says the split on stderr, and --json reports each device's submissions."""

from __future__ import annotations

import json

from vkmtp.cli.main import main

ARGS = ["generate", "-p", "def fibonacci(n):", "-n", "10", "--temp", "0", "-c", "256", "--spec-draft-n-max", "2",
        "--no-spec-adaptive"]


def test_generate_split_prints_what_one_device_prints(capsys):
    assert main(ARGS) == 0
    one = capsys.readouterr().out
    assert main([*ARGS, "-dev", "0,0", "-ts", "3,1"]) == 0
    out = capsys.readouterr()
    assert out.out == one and one.strip()
    assert "layer split by -ts 3,1: Vulkan0: blocks 0-3; Vulkan0.1: the LM head and MTP head only" in out.err
    assert main([*ARGS, "-dev", "0,0", "-ts", "3,1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    graphs = report["graph"]
    assert [graphs["prefill"]["stages"][n]["submissions"] for n in ("Vulkan0", "Vulkan0.1")] == [1, 1]
    assert [graphs["speculative"]["stages"][n]["submissions"] for n in ("Vulkan0", "Vulkan0.1")] == [2, 2]


def test_info_shows_each_devices_plan(capsys):
    from vkmtp.demo_model import default_model_path

    assert main(["info", default_model_path(), "-dev", "0,0", "-ts", "3,1", "-c", "512"]) == 0
    out = capsys.readouterr().out
    assert "layer split   -ts 3,1: Vulkan0: blocks 0-3; Vulkan0.1: the LM head and MTP head only" in out
    assert "memory plan   Vulkan0: blocks 0-3: ctx 512" in out
    assert "memory plan   Vulkan0.1: the LM head and MTP head only: ctx 512" in out
    assert "Vulkan0       Vulkan0 + Vulkan0.1:" in out and "fits on every device" in out
    # a budget nothing fits: refused with each device's plan
    assert main(["info", default_model_path(), "-dev", "0,0", "-ts", "1,1", "-c", "512", "--fit-target", str(1 << 30)]) == 0
    out = capsys.readouterr().out
    assert "does not fit: the stages on Vulkan0" in out and "reduce with" in out
