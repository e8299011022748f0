"""The generating endpoints: /v1/chat/completions, /v1/completions and llama-server's /completion.

Each handler turns its body into prompt ids and an engine Request, submits a Job to the scheduler and either
streams the job's updates as SSE or waits for its Outcome. A client that goes away (streaming or not) cancels
the job, which frees its slot before the engine's next step.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vkmtp.server.context import ServerContext, context_of, read_request
from vkmtp.server.errors import ApiError, bad_request, prompt_too_long
from vkmtp.server.formats import (
    ChatFormatter,
    CompletionFormatter,
    Formatter,
    LlamaFormatter,
    generation_settings,
    sse,
)
from vkmtp.server.scheduler import Chunk, Job, Outcome
from vkmtp.server.schemas import ChatRequest, CompletionRequest, GenerationFields, LlamaCompletionRequest
from vkmtp.server.text import TextStream, prompt_ids
from vkmtp.engine.api import Request as EngineRequest


async def chat_completions(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, ChatRequest)
    prompt = ctx.chat_prompt(body)
    try:
        ids = ctx.info.tokenizer.encode(prompt, add_special=True, parse_special=True)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return await _generate_openai(request, ctx, body, ids, ChatFormatter)


async def completions(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, CompletionRequest)
    ids = _prompt_ids(ctx, body.prompt, allow_mixed=False)
    return await _generate_openai(request, ctx, body, ids, CompletionFormatter)


async def _generate_openai(request: Request, ctx: ServerContext, body, ids: list[int], formatter_class) -> Response:
    formatter = formatter_class(body.model or ctx.info.alias, body.include_usage)
    return await _generate(request, ctx, body, ids, body.token_budget, formatter)


async def llama_completion(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, LlamaCompletionRequest)
    ids = _prompt_ids(ctx, body.prompt, allow_mixed=True)
    settings = generation_settings(
        _sampling(ctx, body),
        ctx.config.token_budget(body.n_predict),
        body.stop,
        ctx.engine_config.spec,
        ctx.speculative,
        ctx.engine_config.n_ctx,
    )
    formatter = LlamaFormatter(ctx.info.alias, ctx.info.tokenizer.decode(ids), settings, body.return_tokens)
    return await _generate(request, ctx, body, ids, body.n_predict, formatter)


def _prompt_ids(ctx: ServerContext, prompt: object, allow_mixed: bool) -> list[int]:
    if prompt is None:
        raise bad_request("prompt: field required")
    try:
        return prompt_ids(prompt, ctx.info.tokenizer, allow_mixed=allow_mixed)
    except ValueError as exc:
        raise bad_request(f"prompt: {exc}") from None


def _sampling(ctx: ServerContext, body: GenerationFields):
    try:
        return body.sampling_params(ctx.config.sampling)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


async def _generate(
    request: Request,
    ctx: ServerContext,
    body: GenerationFields,
    ids: list[int],
    budget: int | None,
    formatter: Formatter,
) -> Response:
    n_ctx = ctx.engine_config.n_ctx
    if not ids:
        raise bad_request("the prompt is empty (it has no tokens)")
    if len(ids) >= n_ctx:
        raise prompt_too_long(len(ids), n_ctx)
    eog = frozenset() if body.ignore_eos else ctx.info.tokenizer.eog_ids
    engine_request = EngineRequest(
        ids,
        _sampling(ctx, body),
        max_tokens=ctx.config.token_budget(budget),
        stop_ids=eog,
        cache_prompt=ctx.config.cache_prompt if body.cache_prompt is None else body.cache_prompt,
    )
    job = Job(engine_request, TextStream(ctx.info.tokenizer, body.stop), asyncio.get_running_loop())
    ctx.scheduler.submit(job)
    if body.stream:
        return StreamingResponse(
            _stream(ctx, job, formatter),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    outcome = await _wait(request, ctx, job)
    if outcome is None:  # the client is gone; nobody reads this
        return Response(status_code=499)
    return JSONResponse(formatter.response(outcome))


async def _stream(ctx: ServerContext, job: Job, formatter: Formatter) -> AsyncIterator[str]:
    """SSE events of a job. Starlette cancels this generator when the client disconnects; `finally` then
    cancels the job."""
    try:
        for obj in formatter.start():
            yield sse(obj)
        async for item in job.updates():
            objs = formatter.chunk(item) if isinstance(item, Chunk) else formatter.final_chunks(item)
            for obj in objs:
                yield sse(obj)
        if formatter.stream_done:
            yield formatter.stream_done
    except ApiError as exc:
        yield sse(exc.body())
    finally:
        if not job.finished:
            ctx.scheduler.cancel(job)


async def _client_gone(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read, so only that can arrive)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait(request: Request, ctx: ServerContext, job: Job) -> Outcome | None:
    """The job's outcome, or None if the client disconnected first (the job is then cancelled)."""
    result = asyncio.ensure_future(job.result())
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not job.finished:
            ctx.scheduler.cancel(job)
        for task in (result, gone):
            if not task.done():
                task.cancel()
    return result.result() if result.done() and not result.cancelled() else None
