"""What the server says while it works, through Python's logging: a start block (model, settings), the engine
once it is loaded (device, memory), and one timing line per request, as llama-server prints them.

`--log-format json` makes every record one JSON object per line for log collectors.
"""

from __future__ import annotations

import json
import logging
import time

from vkmtp.engine.api import Engine, Timings

log = logging.getLogger("vkmtp.server")

GiB = 2**30


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the exception text, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Root logging for `vkmtp serve`: text (llama-server-like) or json, at `level`."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_start(info, config, backend: str) -> None:
    """The start block: what is served and with which settings (before the engine loads)."""
    spec = config.engine.spec
    log.info("model: %s (alias %s), %s, %.3f B parameters, %.3f GiB", info.path, info.alias, info.arch,
             info.n_params / 1e9, info.size / GiB)
    log.info("quant mix: %s", ", ".join(f"{k} {v / GiB:.3f} GiB" for k, v in info.quant_mix.most_common()))
    log.info("backend %s, device %s, context %d per slot, %d slot(s), ubatch %d, KV cache %s",
             backend, _devices(config.engine), config.engine.n_ctx,
             config.engine.n_slots, config.engine.ubatch, config.engine.kv_type)
    if spec.enabled and info.has_mtp:
        log.info("MTP: on, draft n-max %d, n-min %d, p-min %.2f%s%s", spec.n_max, spec.n_min, spec.p_min,
                 ", adaptive depth" if spec.adaptive else "",
                 " (the device's tuning profile may set n-max / p-min)" if spec.from_profile else "")
    else:
        log.info("MTP: off (%s)", "disabled" if not spec.enabled else "the model has no MTP head")
    log.info("listening on http://%s:%d%s", config.host, config.port,
             " (API key required)" if config.api_key else "")


def _devices(engine_config) -> str:
    """The device setting as the user gave it: a layer split's devices and proportions, one device, or auto."""
    if engine_config.split_devices:
        ts = engine_config.tensor_split
        return (f"layer split over {','.join(str(d) for d in engine_config.split_devices)}"
                + (f" (-ts {','.join(f'{v:g}' for v in ts)})" if ts else " (by free memory)"))
    return str(engine_config.device) if engine_config.device is not None else "auto"


def log_engine(engine: Engine, seconds: float) -> None:
    """The engine is loaded: device, driver, and the memory it planned and holds."""
    device = getattr(engine, "device", None)
    where = f"{device.info.name} ({device.info.driver_name})" if device is not None else "host (NumPy reference)"
    log.info("engine loaded in %.1f s on %s", seconds, where)
    spec = engine.config.spec
    if spec.enabled:
        log.info("MTP settings in force: draft n-max %d, n-min %d, p-min %.2f%s", spec.n_max, spec.n_min,
                 spec.p_min, ", adaptive depth" if spec.adaptive else "")
    cache = getattr(engine, "host_cache", None)
    if cache is not None:
        limit = engine.config.cache_ram_mib
        log.info("host-RAM prompt cache: %s", "off (--cache-ram 0)" if not cache.enabled else
                 "no size limit (--cache-ram -1)" if cache.limit is None else f"up to {limit} MiB (--cache-ram)")
    plan = getattr(engine, "memory_plan", None)
    if plan is not None:
        log.info("memory plan:\n%s", plan.describe())


def log_request(id_task: int, slot: int, timings: Timings, stop_type: str) -> None:
    """One line per finished request: prompt and decode speed, cache reuse, draft acceptance."""
    t = timings.to_json()
    line = (f"task {id_task} slot {slot}: prompt {t['prompt_n']} tokens ({t['cache_n']} cached) in "
            f"{t['prompt_ms']:.1f} ms = {t['prompt_per_second']:.1f} tok/s | generated {t['predicted_n']} in "
            f"{t['predicted_ms']:.1f} ms = {t['predicted_per_second']:.1f} tok/s")
    if timings.draft_n:
        line += (f" | drafts {timings.draft_n_accepted}/{timings.draft_n} accepted "
                 f"({100.0 * timings.draft_n_accepted / timings.draft_n:.1f}%)")
    log.info("%s | stop: %s", line, stop_type)
