"""POST /slots/{id_slot}?action=save|restore|erase: a slot's prompt cache to a file, back, or forgotten (llama-server's).

save and restore need --slot-save-path (the directory of the files; `filename` is a plain name inside it, never
a path). The file format and its identity check are vkmtp/engine/slot_file.py's; the copies run in the engine's
thread (Scheduler.call) while the slot is idle. Answers carry llama-server's fields: id_slot, filename, n_saved,
n_written, timings.save_ms; n_restored, n_read, timings.restore_ms; n_erased.
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from vkmtp.engine.api import NoFreeSlotError
from vkmtp.engine.slot_file import SlotFileError, model_identity, read_slot_file, write_slot_file
from vkmtp.server.context import context_of, read_json
from vkmtp.server.errors import NOT_SUPPORTED, ApiError, bad_request

ACTIONS = ("save", "restore", "erase")
MAX_FILENAME = 255


def _slot_index(request: Request) -> int:
    text = request.path_params["id_slot"]
    n_slots = context_of(request).config.engine.n_slots
    if not text.isdigit() or int(text) >= n_slots:
        raise bad_request(f"id_slot {text!r}: a slot number from 0 to {n_slots - 1}")
    return int(text)


def _file_path(directory: str, body: dict) -> tuple[str, str]:
    """(filename, path inside the save directory); a name that is not a plain file name is refused."""
    name = body.get("filename")
    if not isinstance(name, str) or not name:
        raise bad_request("filename: a file name (string) is required")
    bad = (len(name) > MAX_FILENAME or name in (".", "..") or name.startswith(".") or "\x00" in name
           or any(sep in name for sep in ("/", "\\")) or os.path.basename(name) != name)
    if bad:
        raise bad_request(f"filename {name[:80]!r}: a plain file name inside --slot-save-path (no directories, "
                          f"no leading dot, at most {MAX_FILENAME} characters)")
    return name, os.path.join(directory, name)


async def _engine_call(ctx, fn):
    try:
        return await ctx.scheduler.call(fn)
    except (NoFreeSlotError, SlotFileError, ValueError) as exc:
        raise bad_request(str(exc)) from None


async def slot_action(request: Request) -> Response:
    ctx = context_of(request)
    index = _slot_index(request)
    action = request.query_params.get("action")
    if action not in ACTIONS:
        raise bad_request(f"action {action!r}: one of {', '.join(ACTIONS)}")
    if action == "erase":
        n = await _engine_call(ctx, lambda engine: engine.erase_slot(index))
        return JSONResponse({"id_slot": index, "n_erased": n})
    directory = ctx.config.slot_save_path
    if directory is None:
        raise ApiError(501, f"slot {action} needs the server started with --slot-save-path DIR (the directory of "
                            f"slot files)", NOT_SUPPORTED)
    body = await read_json(request, ctx.config.max_body_bytes)
    filename, path = _file_path(directory, body)
    identity = {"model": model_identity(ctx.info.path)}
    t0 = time.perf_counter()
    if action == "save":
        image, settings = await _engine_call(ctx, lambda engine: (engine.save_slot(index), engine.image_settings()))
        n_written = await asyncio.to_thread(write_slot_file, path, image, identity | settings)
        return JSONResponse({"id_slot": index, "filename": filename, "n_saved": image.n_tokens,
                             "n_written": n_written, "timings": {"save_ms": 1e3 * (time.perf_counter() - t0)}})
    if not os.path.isfile(path):
        raise bad_request(f"filename {filename!r}: no such slot file in --slot-save-path")
    settings = await _engine_call(ctx, lambda engine: engine.image_settings())
    try:
        image, n_read = await asyncio.to_thread(read_slot_file, path, identity | settings)
    except SlotFileError as exc:
        raise bad_request(str(exc)) from None
    n = await _engine_call(ctx, lambda engine: engine.restore_slot(index, image))
    return JSONResponse({"id_slot": index, "filename": filename, "n_restored": n, "n_read": n_read,
                         "timings": {"restore_ms": 1e3 * (time.perf_counter() - t0)}})
