"""llama-server command lines users run today start `vkmtp serve`, or stop with a message naming the flag whose
feature vkmtp lacks; LLAMA_ARG_* variables stand for flags; nothing is silently ignored."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.server.live_server import free_port, wait_until_serving
from vkmtp.cli.llama_flags import (FlagError, argv_with_env, check_llama_flags, device_list, device_selector,
                                   logical_names, spec_enabled)
from vkmtp.cli.main import _engine_config, _sampling_defaults, _thinking_kwargs, build_parser

# From published MTP reports (the model path is replaced by the demo model). `expect`: None = the server
# starts; otherwise the text the refusal must contain.
COMMAND_LINES = [
    ("--fit on --fit-target 512 --ctx-size 131072 --cache-type-k q8_0 --cache-type-v q8_0 --cache-type-k-draft q8_0 "
     "--cache-type-v-draft q8_0 --spec-type draft-mtp --spec-draft-p-min 0.75 --spec-draft-n-max 3 --no-mmap --mlock "
     "--threads 8 --temp 0.0", None),
    ("-np 1 --chat-template-kwargs '{\"preserve_thinking\": true}' --spec-type draft-mtp --spec-draft-n-max 3", None),
    ("--spec-type mtp --spec-draft-n-max 5 --ctx-size 262144 --cache-type-k q4_0 --cache-type-v q4_0 --batch-size 512 "
     "--ubatch-size 512 --parallel 1 --flash-attn on", "--cache-type-k: invalid choice: 'q4_0'"),
    ("-fa on -c 10000 -np 1 -ngl 99 --no-mmap --no-cache-prompt --spec-type mtp --spec-draft-n-max 3", None),
    ("-fa on -c 5000 -np 1 -fit on --chat-template-kwargs '{\"preserve_thinking\": true}' --spec-type mtp "
     "--spec-draft-n-max 4", None),
    ("--spec-type draft-mtp --spec-draft-n-max 2 --no-mmproj", None),
    ("--fit --fit-margin 1664 --ctx-size 131072 --cache-type-k q8_0 --cache-type-v q8_0 --cache-type-k-draft q8_0 "
     "--cache-type-v-draft q8_0 --multi-token-prediction --draft-p-min 0.75 --draft-max 3 --no-mmap --mlock "
     "--threads 8 --temp 0.0", None),
]


def parse(line: str, command: str = "serve"):
    args = build_parser().parse_args([command, *shlex.split(line)])
    return args, check_llama_flags(args)


@pytest.mark.parametrize("line,expect", COMMAND_LINES, ids=[f"line{i}" for i in range(len(COMMAND_LINES))])
def test_real_command_lines_start_or_name_the_refused_flag(line, expect, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vkmtp.cli", "serve", *shlex.split(line), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        if expect is not None:
            assert proc.wait(120) == 2
            out = (tmp_path / "serve.log").read_text()
            assert expect in out and "Traceback" not in out, out
            return
        wait_until_serving(port, proc, (tmp_path / "serve.log").read_text)
        out = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in out
        if "-ngl" in line:
            assert "-ngl/--gpu-layers/--n-gpu-layers 99: all layers always run on the Vulkan device" in out
        if "-fa on" in line:
            assert "-fa/--flash-attn on: vkmtp always uses flash attention" in out
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        log.close()


def test_short_flags_are_not_read_as_prefixes_of_others():
    args, notes = parse("-ngl 99 -np 2 -n 16 -t 4 -c 512")
    assert (args.llama_n_gpu_layers, args.parallel, args.n_predict, args.ctx_size) == ("99", 2, 16, 512)
    assert any(n.startswith("-t/--threads 4:") for n in notes)
    gen, notes = parse("-p hi -np 2", "generate")
    assert gen.parallel == 2 and gen.prompt == "hi"


def test_llama_and_ik_names_of_the_draft_settings():
    args, _ = parse("--spec-type draft-mtp --draft-max 5 --draft-min 2 --draft-p-min 0.5")
    spec = _engine_config(args).spec
    assert spec.enabled and (spec.n_max, spec.n_min, spec.p_min) == (5, 2, 0.5)
    assert not _engine_config(parse("--spec-type none")[0]).spec.enabled
    assert _engine_config(parse("-mtp")[0]).spec.enabled
    with pytest.raises(FlagError, match="not supported: ngram-mod"):
        spec_enabled("draft-mtp,ngram-mod", False, False)
    with pytest.raises(FlagError, match="contradict"):
        spec_enabled("draft-mtp", True, False)


def test_refused_flags_name_themselves_and_allowed_values_pass():
    for line, flag in [("-fa off", "-fa/--flash-attn off"), ("-md draft.gguf", "-md/--model-draft/--spec-draft-model draft.gguf"),
                       ("--timeout 30", "-to/--timeout 30")]:
        with pytest.raises(FlagError, match="not supported") as info:
            parse(line)
        assert flag in str(info.value)
    _, notes = parse("-ctkd f16 -ctvd f16 --reasoning-format none --reasoning-budget -1 --fit off --metrics --jinja")
    assert len(notes) == 2   # --metrics, --jinja; the others are vkmtp options


def test_reasoning_flags_are_real_options(capsys):
    args, notes = parse("--reasoning-format none --reasoning-budget 0")
    assert (args.reasoning_format, args.reasoning_budget, notes) == ("none", 0, [])
    assert _thinking_kwargs(args) == {"enable_thinking": False}
    args, _ = parse("--chat-template-kwargs '{\"preserve_thinking\": true}'")
    assert (args.reasoning_format, _thinking_kwargs(args)) == ("auto", {"preserve_thinking": True})
    with pytest.raises(SystemExit):
        parse("--reasoning-budget 512")
    assert "thinking budget in tokens is not implemented yet" in capsys.readouterr().err


def test_fit_and_draft_cache_flags_reach_the_engine_config():
    args, notes = parse("--fit --fit-margin 1664 -c 8192 -ctk q8_0 -ctvd q8_0 --max-submit-ms 50")
    c = _engine_config(args)
    assert notes == [] and c.fit and c.fit_margin_mib == 1664 and c.ctx_fixed and c.n_ctx == 8192
    assert (c.cache_types.k, c.cache_types.v, c.cache_types.mtp_k, c.cache_types.mtp_v) == \
        ("q8_0", "f16", "q8_0", "q8_0")
    assert c.max_submit_ms == 50
    args, _ = parse("-c 0 --fit-target 512")
    c = _engine_config(args)
    assert c.n_ctx == 0 and not c.ctx_fixed and c.fit_margin_mib == 512
    assert not _engine_config(parse("")[0]).ctx_fixed            # the default context is shrunk to fit
    assert _engine_config(parse("--fit off")[0]).ctx_fixed
    with pytest.raises(SystemExit):
        parse("--fit-target 512,1024")                            # one device: one margin
    with pytest.raises(FlagError, match="needs --fit on"):
        _engine_config(parse("-c 0 --fit off")[0])


def test_prompt_cache_flags_reach_the_engine_config():
    c = _engine_config(parse("--ctx-checkpoints 3 --slot-prompt-similarity 0.5")[0])
    assert (c.ctx_checkpoints, c.slot_prompt_similarity) == (3, 0.5)
    c = _engine_config(parse("-ctxcp 0 -sps 0")[0])
    assert (c.ctx_checkpoints, c.slot_prompt_similarity) == (0, 0.0)
    assert _engine_config(parse("")[0]).ctx_checkpoints == 8
    with pytest.raises(SystemExit):
        parse("--slot-prompt-similarity 1.5")
    assert _engine_config(parse("")[0]).cache_ram_mib == 8192      # llama.cpp's default
    assert _engine_config(parse("--cache-ram -1")[0]).cache_ram_mib == -1
    assert _engine_config(parse("-cram 0")[0]).cache_ram_mib == 0
    with pytest.raises(SystemExit):
        parse("--cache-ram -2")


def test_sampling_flags_reach_the_defaults():
    args, _ = parse("--repeat-last-n 32 --presence-penalty 0.5 --frequency-penalty 0.25 --temp 0.3")
    s = _sampling_defaults(args)
    assert (s.repeat_last_n, s.presence_penalty, s.frequency_penalty, s.temperature) == (32, 0.5, 0.25, 0.3)


def test_device_names_as_llama_cpp_prints_them():
    assert device_selector("Vulkan1") == 1 and device_selector("0") == 0 and device_selector(None) is None
    with pytest.raises(FlagError, match="this command uses one device"):
        device_selector("Vulkan0,Vulkan1")   # `vkmtp devices --device`, `vkmtp tune --device`
    assert device_list("Vulkan0, 1,Vulkan0") == (0, 1, 0)
    assert logical_names((0, 1, 0, 0)) == ["Vulkan0", "Vulkan1", "Vulkan0.1", "Vulkan0.2"]
    with pytest.raises(FlagError, match="--device CUDA0"):
        device_selector("CUDA0")
    assert parse("-dev Vulkan0")[0].device == "Vulkan0"


def test_llama_arg_variables_stand_for_flags(monkeypatch):
    parser = build_parser()
    serve = parser.commands["serve"]
    monkeypatch.setenv("LLAMA_ARG_CTX_SIZE", "2048")
    monkeypatch.setenv("LLAMA_ARG_N_GPU_LAYERS", "99")
    monkeypatch.setenv("LLAMA_ARG_JINJA", "true")
    monkeypatch.setenv("LLAMA_ARG_ENDPOINT_METRICS", "0")
    argv = argv_with_env(["serve", "-c", "1024"], serve)  # the command line wins over the variable
    args = parser.parse_args(argv)
    assert args.ctx_size == 1024 and args.llama_n_gpu_layers == "99" and args.llama_jinja and not args.llama_metrics
    monkeypatch.setenv("LLAMA_ARG_NOT_A_FLAG", "1")
    with pytest.raises(FlagError, match="LLAMA_ARG_NOT_A_FLAG"):
        argv_with_env(["serve"], serve)
    monkeypatch.delenv("LLAMA_ARG_NOT_A_FLAG")
    monkeypatch.setenv("LLAMA_ARG_JINJA", "maybe")
    with pytest.raises(FlagError, match="expected a boolean"):
        argv_with_env(["serve"], serve)


def test_chat_template_flags(tmp_path):
    from vkmtp.cli.llama_flags import chat_template_source, read_api_key, template_kwargs

    f = tmp_path / "t.jinja"
    f.write_text("{{ messages[0].content }}")
    assert chat_template_source(None, str(f)) == "{{ messages[0].content }}"
    assert "im_start" in chat_template_source("chatml", None)
    with pytest.raises(FlagError, match="--chat-template llama3"):
        chat_template_source("llama3", None)
    assert template_kwargs('{"enable_thinking": false}') == {"enable_thinking": False}
    with pytest.raises(FlagError, match="JSON object"):
        template_kwargs("[1]")
    key = tmp_path / "key"
    key.write_text("\nsecret\n")
    assert read_api_key(None, str(key)) == "secret"
    with pytest.raises(FlagError, match="one API key"):
        read_api_key("other", str(key))


def test_info_prints_the_draft_depth_generation_would_use(tmp_path, monkeypatch, capsys):
    from vkmtp.cli.main import main
    from vkmtp.demo_model import default_model_path
    from vkmtp.device import list_devices, pick_device
    from vkmtp.tuning.profile import MtpTuning, TuningProfile, save_profile

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("VKMTP_TUNING", raising=False)
    model = default_model_path()
    assert main(["info", model]) == 0
    assert "draft n-max   3 (built-in default)" in capsys.readouterr().out
    info = pick_device(list_devices())
    save_profile(TuningProfile(device=info.cache_tag, mtp={os.path.basename(model): MtpTuning(1, 0.3)}), info)
    assert main(["info", model]) == 0
    assert "draft n-max   1 (the tuning profile of this device)" in capsys.readouterr().out
    assert main(["info", model, "--spec-draft-n-max", "2"]) == 0
    assert "draft n-max   2 (--spec-draft-n-max)" in capsys.readouterr().out


def test_first_run_shows_shader_compilation_progress(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")},
           "VKMTP_CACHE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "vkmtp.cli", "generate", "-p", "def f(", "-n", "2", "--temp", "0"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "compiling shaders (first run; cached afterwards)" in first.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "compiling shaders" not in again.stderr


def test_placement_flags_reach_the_engine_config_in_llama_cpp_order():
    from vkmtp.graph.tensor_overrides import FFN_EXPS_REGEX

    c = _engine_config(parse("--n-cpu-moe 2 -ot blk[.]3[.]ffn_up_exps=CPU,down=Vulkan0 --cpu-moe")[0])
    got = [(o.pattern, o.buffer_type, o.flag) for o in c.tensor_overrides]
    assert got == [("blk[.]3[.]ffn_up_exps", "CPU", "-ot"), ("down", "Vulkan0", "-ot"),
                   (FFN_EXPS_REGEX, "CPU", "--cpu-moe"), (f"blk\\.0{FFN_EXPS_REGEX}", "CPU", "--n-cpu-moe 2"),
                   (f"blk\\.1{FFN_EXPS_REGEX}", "CPU", "--n-cpu-moe 2")]
    assert _engine_config(parse("-cmoe -ncmoe 1")[0]).tensor_overrides[0].flag == "--cpu-moe"
    assert _engine_config(parse("")[0]).tensor_overrides == ()
    with pytest.raises(FlagError, match="-ot 'exps': expected REGEX=BUFFER_TYPE"):
        _engine_config(parse("-ot exps")[0])
    with pytest.raises(FlagError, match="--n-cpu-moe -1"):
        _engine_config(parse("--n-cpu-moe -1")[0])


def device_choice(line: str, model: str | None = None):
    from vkmtp.cli.main import _device_choice

    return _device_choice(parse(line)[0], model)


def test_one_device_of_several_with_split_mode_none():
    # lavapipe is Vulkan0; `-dev 0,0` opens it twice as two logical devices (Vulkan0, Vulkan0.1)
    assert device_choice("") is None and device_choice("-dev Vulkan0") == 0
    assert device_choice("-dev 0,0 -sm none") == 0 and device_choice("-dev 0,0 -sm none -mg 1") == 0
    assert device_choice("-mg 0") == 0 and device_choice("-sm layer") is None
    assert _engine_config(parse("-dev Vulkan0,Vulkan0 --split-mode none --main-gpu 1")[0]).device == 0
    with pytest.raises(FlagError, match=r"-mg/--main-gpu 2: an index into -dev/--device's 2 devices \(0..1\)"):
        device_choice("-dev 0,0 -sm none -mg 2")
    with pytest.raises(FlagError, match="-mg/--main-gpu 1: an index into `vkmtp devices`"):
        device_choice("-mg 1")


def test_bad_device_combinations_are_refused_naming_the_flag():
    from vkmtp.demo_model import default_model_path

    model = default_model_path()
    cases = [("-dev 0,7", "-dev/--device 0,7: Vulkan7 does not exist; `vkmtp devices` lists Vulkan0"),
             ("-dev none", "--device none: vkmtp runs the model on a Vulkan device; it has no CPU backend"),
             ("-dev CUDA0,Vulkan0", "--device CUDA0,Vulkan0: expected device names"),
             ("-ts 3,1", "-ts/--tensor-split 3,1: splits a model over several devices, but one is in use"),
             ("-dev 0 -ts 3,1", "-ts/--tensor-split 3,1: splits a model over several devices, but one is in use"),
             ("-dev 0,0 -ts 3,1,1", "-ts/--tensor-split 3,1,1: 3 proportions for 2 devices"),
             ("-dev 0,0 -ts 1,0", "-ts/--tensor-split 1,0: proportions are > 0"),
             ("-dev 0,0 -sm none -ts 1,1", "-ts/--tensor-split 1,1: splits layers between devices; --split-mode "
                                           "none runs on one"),
             ("-dev 0,0 -mg 1", "-mg/--main-gpu 1: picks the device of --split-mode none"),
             ("-sm row", "-sm/--split-mode row: not supported: vkmtp splits a model over devices by layers only"),
             ("-sm rows", "-sm/--split-mode rows: expected none, layer or row"),
             ("-dev 0,0,0 -ts 10,0.01,1", "the layer split 10,0.01,1 leaves Vulkan0.1 without a trunk block")]
    for line, message in cases:
        with pytest.raises(FlagError, match=re.escape(message)):
            device_choice(line, model)


def test_a_valid_layer_split_is_checked_and_chosen_showing_it():
    from vkmtp.cli.main import LayerSplitChoice
    from vkmtp.demo_model import default_model_path

    model = default_model_path()   # 4 trunk blocks + the MTP block
    for line, shares, split in (
            ("-dev Vulkan0,Vulkan0 -ts 1,1", (1.0, 1.0),
             "by -ts 1,1: Vulkan0: blocks 0-2; Vulkan0.1: block 3 + LM head and MTP head"),
            ("-dev 0,0 --split-mode layer --tensor-split 3/1", (3.0, 1.0),
             "by -ts 3/1: Vulkan0: blocks 0-3; Vulkan0.1: the LM head and MTP head only"),
            ("-dev 0,0", None, "by free memory: Vulkan0: blocks 0-2; Vulkan0.1: block 3")):
        choice = device_choice(line, model)
        assert isinstance(choice, LayerSplitChoice) and choice.devices == (0, 0) and choice.shares == shares
        assert split in choice.description
    config = _engine_config(parse("-dev 0,0 -ts 3,1 -c 256")[0])
    assert (config.device, config.split_devices, config.tensor_split) == (None, (0, 0), (3.0, 1.0))


def test_split_flags_from_llama_arg_variables(monkeypatch):
    serve = build_parser().commands["serve"]
    monkeypatch.setenv("LLAMA_ARG_DEVICE", "Vulkan0,Vulkan0")
    monkeypatch.setenv("LLAMA_ARG_SPLIT_MODE", "none")
    monkeypatch.setenv("LLAMA_ARG_MAIN_GPU", "1")
    monkeypatch.setenv("LLAMA_ARG_TENSOR_SPLIT", "3,1")
    argv = argv_with_env(["serve"], serve)
    args = build_parser().parse_args(argv)
    assert (args.device, args.split_mode, args.main_gpu, args.tensor_split) == ("Vulkan0,Vulkan0", "none", 1, "3,1")
    with pytest.raises(FlagError, match="-ts/--tensor-split 3,1: splits layers between devices"):
        _engine_config(args)


def test_a_refused_split_stops_generate_before_loading(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    out = subprocess.run([sys.executable, "-m", "vkmtp.cli", "generate", "-p", "hi", "-n", "2", "-dev", "0,5"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "-dev/--device 0,5: Vulkan5 does not exist" in out.stderr
