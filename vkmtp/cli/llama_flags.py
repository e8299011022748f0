"""llama-server's command-line flags in vkmtp: each one works, is accepted with a one-line note (it has no
meaning here), or is refused with the reason; plus the `LLAMA_ARG_*` environment variables that stand for them.

Users paste their llama-server command lines. argparse alone would read `-ngl 99` as `-n gl99` and reject
`-fa on`, so every llama-server flag is registered by its exact spellings (argparse matches whole option
strings first) and given a status here. docs/SERVER.md has the same table for people.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from vkmtp import env

# Status of a flag that vkmtp accepts without acting on it: the note is printed once at start.
NOTED = "noted"
# A flag whose feature vkmtp does not have: using it is an error that names it.
REFUSED = "refused"

_TRUE = {"1", "true", "on", "enabled", "yes"}
_FALSE = {"0", "false", "off", "disabled", "no"}


@dataclass(frozen=True)
class LlamaFlag:
    """A llama-server flag without a vkmtp setting of its own (those are plain argparse options)."""

    names: tuple[str, ...]
    takes_value: bool
    status: str  # NOTED or REFUSED
    why: str  # the note, or the reason for refusing
    commands: tuple[str, ...] = ("serve", "chat", "generate")
    env: str | None = None  # the LLAMA_ARG_* variable llama.cpp reads for it
    allowed: tuple[str, ...] = ()  # values that are accepted with the note although the flag is REFUSED
    switch_value: str | None = None  # the value meant when the flag is given without one

    @property
    def dest(self) -> str:
        return "llama_" + self.names[-1].lstrip("-").replace("-", "_")


_ALL = ("serve", "chat", "generate")
FLAGS: tuple[LlamaFlag, ...] = (
    LlamaFlag(("-ngl", "--gpu-layers", "--n-gpu-layers"), True, NOTED,
              "all layers always run on the Vulkan device", env="LLAMA_ARG_N_GPU_LAYERS"),
    LlamaFlag(("-t", "--threads"), True, NOTED,
              "host threads only tokenize and serve; the GPU does the model's work", env="LLAMA_ARG_THREADS"),
    LlamaFlag(("-tb", "--threads-batch"), True, NOTED, "host threads only tokenize and serve",
              env="LLAMA_ARG_THREADS_BATCH"),
    LlamaFlag(("-b", "--batch-size"), True, NOTED,
              "a prompt is processed in chunks of -ub tokens; there is no separate logical batch",
              env="LLAMA_ARG_BATCH"),
    LlamaFlag(("--jinja",), False, NOTED, "the GGUF's Jinja chat template is always used", env="LLAMA_ARG_JINJA"),
    LlamaFlag(("-cb", "--cont-batching"), False, NOTED, "slots are always decoded together",
              env="LLAMA_ARG_CONT_BATCHING"),
    LlamaFlag(("--no-mmap",), False, NOTED,
              "weights are copied into device memory at load; the file is read once, not kept mapped",
              env="LLAMA_ARG_NO_MMAP"),
    LlamaFlag(("--mlock",), False, NOTED, "weights live in device memory, which the OS does not swap",
              env="LLAMA_ARG_MLOCK"),
    LlamaFlag(("--no-warmup",), False, NOTED, "vkmtp runs no warm-up pass"),
    LlamaFlag(("--no-mmproj",), False, NOTED, "vkmtp loads no multimodal projector"),
    LlamaFlag(("--metrics",), False, NOTED, "/metrics is always served", ("serve",), "LLAMA_ARG_ENDPOINT_METRICS"),
    LlamaFlag(("--slots",), False, NOTED, "/slots is always served", ("serve",), "LLAMA_ARG_ENDPOINT_SLOTS"),
    LlamaFlag(("--props",), False, NOTED, "/props is always served", ("serve",), "LLAMA_ARG_ENDPOINT_PROPS"),
    LlamaFlag(("--threads-http",), True, NOTED,
              "the HTTP server is one asyncio loop; requests wait in the bounded queue (--max-queue)",
              ("serve",), "LLAMA_ARG_THREADS_HTTP"),
    LlamaFlag(("-fa", "--flash-attn"), True, REFUSED, "vkmtp always uses flash attention; it has no other path",
              env="LLAMA_ARG_FLASH_ATTN", allowed=("on", "auto", "1", "true", "enabled")),
    LlamaFlag(("-to", "--timeout"), True, REFUSED,
              "vkmtp has no per-request read/write timeout; a request ends when its client disconnects",
              ("serve",), "LLAMA_ARG_TIMEOUT"),
    LlamaFlag(("-md", "--model-draft", "--spec-draft-model"), True, REFUSED,
              "vkmtp drafts with the model's own MTP head; separate draft models are not supported"),
)

# flags vkmtp implements, with the LLAMA_ARG_* variable llama.cpp reads for each (the first spelling is used
# to inject the value)
ENV_OF_OPTION: dict[str, str] = {
    "--model": "LLAMA_ARG_MODEL",
    "--ctx-size": "LLAMA_ARG_CTX_SIZE",
    "--n-predict": "LLAMA_ARG_N_PREDICT",
    "--parallel": "LLAMA_ARG_N_PARALLEL",
    "--ubatch-size": "LLAMA_ARG_UBATCH",
    "--cache-type-k": "LLAMA_ARG_CACHE_TYPE_K",
    "--cache-type-v": "LLAMA_ARG_CACHE_TYPE_V",
    "--device": "LLAMA_ARG_DEVICE",
    "--split-mode": "LLAMA_ARG_SPLIT_MODE",
    "--tensor-split": "LLAMA_ARG_TENSOR_SPLIT",
    "--main-gpu": "LLAMA_ARG_MAIN_GPU",
    "--host": "LLAMA_ARG_HOST",
    "--port": "LLAMA_ARG_PORT",
    "--api-key": "LLAMA_ARG_API_KEY",
    "--api-key-file": "LLAMA_ARG_API_KEY_FILE",
    "--alias": "LLAMA_ARG_ALIAS",
    "--chat-template": "LLAMA_ARG_CHAT_TEMPLATE",
    "--chat-template-file": "LLAMA_ARG_CHAT_TEMPLATE_FILE",
    "--chat-template-kwargs": "LLAMA_ARG_CHAT_TEMPLATE_KWARGS",
    "--spec-draft-n-max": "LLAMA_ARG_DRAFT_MAX",
    "--spec-draft-n-min": "LLAMA_ARG_DRAFT_MIN",
    "--spec-draft-p-min": "LLAMA_ARG_DRAFT_P_MIN",
    "--spec-type": "LLAMA_ARG_SPEC_TYPE",
    "--no-webui": "LLAMA_ARG_NO_WEBUI",
    "--reasoning-format": "LLAMA_ARG_THINK",
    "--reasoning-budget": "LLAMA_ARG_THINK_BUDGET",
    "--fit": "LLAMA_ARG_FIT",
    "--cache-ram": "LLAMA_ARG_CACHE_RAM",
    "--fit-target": "LLAMA_ARG_FIT_TARGET",
    "--cpu-moe": "LLAMA_ARG_CPU_MOE",
    "--n-cpu-moe": "LLAMA_ARG_N_CPU_MOE",
    "--cache-type-k-draft": "LLAMA_ARG_CACHE_TYPE_K_DRAFT",
    "--cache-type-v-draft": "LLAMA_ARG_CACHE_TYPE_V_DRAFT",
}


class FlagError(ValueError):
    """A flag vkmtp refuses, or a value it cannot use; the message names the flag."""


def add_llama_flags(p: argparse.ArgumentParser, command: str) -> None:
    """Registers llama-server's flags that have no vkmtp setting of their own on one subcommand."""
    for flag in FLAGS:
        if command not in flag.commands:
            continue
        if flag.takes_value and flag.switch_value:  # `--fit` alone means `--fit on` (ik_llama.cpp's spelling)
            p.add_argument(*flag.names, dest=flag.dest, nargs="?", const=flag.switch_value, default=None,
                           metavar="VALUE", help=argparse.SUPPRESS)
        elif flag.takes_value:
            p.add_argument(*flag.names, dest=flag.dest, default=None, metavar="VALUE", help=argparse.SUPPRESS)
        else:
            p.add_argument(*flag.names, dest=flag.dest, action="store_true", default=None, help=argparse.SUPPRESS)


def check_llama_flags(args: argparse.Namespace) -> list[str]:
    """Notes for the accepted flags; raises FlagError naming the first refused one."""
    notes = []
    for flag in FLAGS:
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        spelled = "/".join(flag.names)
        shown = f"{spelled} {value}" if flag.takes_value else spelled
        if flag.status == REFUSED and (not flag.takes_value or str(value).lower() not in flag.allowed):
            accepted = f" (accepted: {', '.join(flag.allowed)})" if flag.allowed else ""
            raise FlagError(f"{shown}: not supported: {flag.why}{accepted}")
        notes.append(f"{shown}: {flag.why}")
    return notes


def argv_with_env(argv: list[str], command: argparse.ArgumentParser) -> list[str]:
    """argv plus the options given by LLAMA_ARG_* variables that the command line does not set.

    Only options the subcommand knows are injected; a LLAMA_ARG_* variable vkmtp does not know at all is an
    error naming it (it is not silently ignored)."""
    actions = command._option_string_actions  # every spelling -> its action
    env_to_option = {env: opt for opt, env in ENV_OF_OPTION.items()}
    env_to_option.update({f.env: f.names[-1] for f in FLAGS if f.env})
    extra: list[str] = []
    for name, value in sorted(env.llama_arg_variables().items()):
        option = env_to_option.get(name)
        if option is None:
            raise FlagError(f"environment variable {name} is not a llama-server setting vkmtp knows; unset it")
        action = actions.get(option)
        if action is None or any(a.split("=")[0] in action.option_strings for a in argv):
            continue  # not an option of this subcommand, or the command line sets it
        if action.nargs == 0:  # a switch
            if value.lower() in _TRUE:
                extra.append(option)
            elif value.lower() not in _FALSE:
                raise FlagError(f"{name}={value!r}: expected a boolean (1/0, true/false, on/off)")
        else:
            extra += [option, value]
    return list(argv) + extra


def device_selector(value: str | None) -> int | str | None:
    """One device as llama.cpp names devices (`Vulkan0`, `Vulkan1`, ...) or as an index (`vkmtp devices`,
    `vkmtp tune`); -dev/--device of the model commands takes a list (device_list)."""
    if value is None:
        return None
    if "," in value:
        raise FlagError(f"--device {value}: this command uses one device; give one (e.g. Vulkan0)")
    return _one_device(value.strip(), value)


def _one_device(text: str, value: str) -> int:
    if text.lower().startswith("vulkan") and text[6:].isdigit():
        return int(text[6:])
    if text.isdigit():
        return int(text)
    if text.lower() == "none":
        raise FlagError(f"--device {value}: vkmtp runs the model on a Vulkan device; it has no CPU backend "
                        f"(`none`)")
    raise FlagError(f"--device {value}: expected device names as `vkmtp devices` lists them (Vulkan0, ...) "
                    f"or indices, comma-separated")


def device_list(value: str | None) -> tuple[int, ...] | None:
    """-dev/--device: one device or several, comma-separated (llama.cpp's names or indices), as physical device
    indices in the order given. A device listed twice names two logical devices on one physical device
    (logical_names): a layer split over lavapipe opened twice stands for one over two GPUs."""
    if value is None:
        return None
    return tuple(_one_device(t.strip(), value) for t in value.split(","))


def logical_names(physical: tuple[int, ...]) -> list[str]:
    """The name of each logical device (`-dev 0,0` -> Vulkan0, Vulkan0.1): vkmtp.graph.layer_split's."""
    from vkmtp.graph.layer_split import logical_names as names

    return names(physical)


def spec_enabled(spec_type: str | None, no_mtp: bool, multi_token_prediction: bool) -> bool:
    """Whether MTP drafting is on, from --spec-type (llama-server), -mtp (ik_llama.cpp) and --no-mtp."""
    if spec_type is None:
        if no_mtp and multi_token_prediction:
            raise FlagError("--no-mtp and --multi-token-prediction contradict each other")
        return not no_mtp
    types = [t.strip() for t in spec_type.split(",") if t.strip()]
    unknown = [t for t in types if t not in ("none", "draft-mtp", "mtp")]
    if unknown:
        raise FlagError(f"--spec-type {spec_type}: vkmtp drafts only with the model's MTP head "
                        f"(draft-mtp, or its older name mtp); not supported: {', '.join(unknown)}")
    wanted = any(t in ("draft-mtp", "mtp") for t in types)
    if wanted and no_mtp:
        raise FlagError(f"--spec-type {spec_type} and --no-mtp contradict each other")
    return wanted


def template_kwargs(text: str | None) -> dict:
    """--chat-template-kwargs: a JSON object passed to the chat template."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlagError(f"--chat-template-kwargs: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise FlagError("--chat-template-kwargs: expected a JSON object, e.g. '{\"enable_thinking\": false}'")
    return value


def chat_template_source(name_or_source: str | None, file: str | None) -> str | None:
    """--chat-template (Jinja source, or the built-in name chatml) / --chat-template-file: the template that
    replaces the GGUF's, or None to keep it."""
    if name_or_source is not None and file is not None:
        raise FlagError("--chat-template and --chat-template-file: give one")
    if file is not None:
        try:
            with open(file, encoding="utf-8") as fh:
                return fh.read()
        except OSError as exc:
            raise FlagError(f"--chat-template-file {file}: {exc.strerror}") from None
    if name_or_source is None:
        return None
    if "{%" in name_or_source or "{{" in name_or_source:
        return name_or_source
    if name_or_source == "chatml":
        from vkmtp.text.chat_template import CHATML_TEMPLATE

        return CHATML_TEMPLATE
    raise FlagError(f"--chat-template {name_or_source}: vkmtp knows only the built-in name 'chatml'; pass a Jinja "
                    f"template (or --chat-template-file FILE) for others")


def read_api_key(key: str | None, key_file: str | None) -> str | None:
    """--api-key, or the first non-empty line of --api-key-file."""
    if key_file is None:
        return key
    try:
        with open(key_file, encoding="utf-8") as fh:
            keys = [line.strip() for line in fh if line.strip()]
    except OSError as exc:
        raise FlagError(f"--api-key-file {key_file}: {exc.strerror}") from None
    if not keys:
        raise FlagError(f"--api-key-file {key_file}: the file holds no key")
    if len(keys) > 1 or (key is not None and key != keys[0]):
        raise FlagError("vkmtp takes one API key: give --api-key or a file with one key")
    return keys[0]
