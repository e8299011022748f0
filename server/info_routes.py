"""Endpoints that do not generate: tokenizer utilities and monitoring (/health, /props, /slots, /metrics,
/models). None of them touches the engine, so none wakes a sleeping server."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from vkmtp.server.context import context_of, read_request
from vkmtp.server.errors import UNAVAILABLE, ApiError, bad_request, loading
from vkmtp.server.formats import generation_settings
from vkmtp.server.scheduler import FAILED, LOADING
from vkmtp.server.schemas import ApplyTemplateRequest, DetokenizeRequest, TokenizeRequest

BUILD_INFO = "vkmtp 0.1.0"


async def tokenize(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, TokenizeRequest)
    tok = ctx.info.tokenizer
    try:
        ids = tok.encode(body.content, add_special=body.add_special, parse_special=body.parse_special)
    except ValueError as exc:
        raise bad_request(f"content: {exc}") from None
    if not body.with_pieces:
        return JSONResponse({"tokens": ids})
    pieces = []
    for token_id in ids:
        data = tok.token_bytes(token_id)
        try:
            piece: str | list[int] = data.decode("utf-8")
        except UnicodeDecodeError:  # part of a character: llama-server sends the raw bytes
            piece = list(data)
        pieces.append({"id": token_id, "piece": piece})
    return JSONResponse({"tokens": pieces})


async def detokenize(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, DetokenizeRequest)
    n_vocab = ctx.info.tokenizer.n_vocab
    for i, token_id in enumerate(body.tokens):
        if not 0 <= token_id < n_vocab:
            raise bad_request(f"tokens[{i}] = {token_id} is not a token id in [0, {n_vocab})")
    return JSONResponse({"content": ctx.info.tokenizer.decode(body.tokens)})


async def apply_template(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, ApplyTemplateRequest)
    return JSONResponse({"prompt": ctx.chat_prompt(body)})


async def health(request: Request) -> Response:
    scheduler = context_of(request).scheduler
    if scheduler.state == LOADING:
        raise loading()
    if scheduler.state == FAILED:
        raise ApiError(503, f"the model failed to load: {scheduler.load_error}", UNAVAILABLE)
    return JSONResponse({"status": "ok"})


async def models(request: Request) -> Response:
    ctx = context_of(request)
    return JSONResponse({"object": "list", "data": [ctx.info.model_card(ctx.started)]})


def _default_settings(ctx) -> dict:
    return generation_settings(
        ctx.config.sampling,
        ctx.config.n_predict,
        [],
        ctx.engine_config.spec,
        ctx.speculative,
        ctx.engine_config.n_ctx,
    )


async def props(request: Request) -> Response:
    ctx = context_of(request)
    tok = ctx.info.tokenizer
    piece = lambda i: "" if i is None else tok.token_to_piece(i, render_special=True)  # noqa: E731
    return JSONResponse(
        {
            "default_generation_settings": {
                "n_ctx": ctx.engine_config.n_ctx,
                "params": _default_settings(ctx),
            },
            "total_slots": ctx.config.engine.n_slots,
            "model_path": ctx.info.path,
            "model_alias": ctx.info.alias,
            "chat_template": ctx.info.template.source,
            "bos_token": piece(tok.bos_id),
            "eos_token": piece(tok.eos_id),
            "modalities": {"vision": False, "audio": False},
            "build_info": BUILD_INFO,
            "is_sleeping": ctx.scheduler.sleeping,
        }
    )


async def slots(request: Request) -> Response:
    ctx = context_of(request)
    active = ctx.scheduler.active_jobs()
    if (
        request.query_params.get("fail_on_no_slot") in ("1", "true")
        and len(active) >= ctx.config.engine.n_slots
    ):
        raise ApiError(503, "no slot available", UNAVAILABLE)
    out = []
    for index in range(ctx.config.engine.n_slots):
        job = active.get(index)
        seq = job.seq if job is not None else None
        if seq is None:
            params, n_decoded, n_remain = _default_settings(ctx), 0, -1
        else:
            req = seq.request
            params = generation_settings(
                req.params,
                req.max_tokens,
                job.text.stops,
                ctx.engine_config.spec,
                ctx.speculative,
                ctx.engine_config.n_ctx,
            )
            n_decoded = len(seq.generated)
            n_remain = req.max_tokens - n_decoded if req.max_tokens >= 0 else -1
        entry = {}
        if seq is not None and ctx.speculative:
            # vkmtp: the running request's speculative statistics (tokens per step over all steps, depths)
            entry["speculative_stats"] = seq.spec.to_dict()
        out.append(
            entry | {
                "id": index,
                "id_task": job.id_task if job else -1,
                "n_ctx": ctx.engine_config.n_ctx,
                "speculative": ctx.speculative,
                "is_processing": job is not None,
                "params": params,
                "next_token": {
                    "has_next_token": job is not None,
                    "n_remain": n_remain,
                    "n_decoded": n_decoded,
                },
            }
        )
    return JSONResponse(out)


async def metrics(request: Request) -> Response:
    return Response(context_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
