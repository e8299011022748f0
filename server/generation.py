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

from vkmtp.server.constraints import logit_shape
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
from vkmtp.server.probs_json import ProbsWriter
from vkmtp.server.scheduler import Chunk, Job, Outcome
from vkmtp.server.schemas import ChatRequest, CompletionRequest, GenerationFields, LlamaCompletionRequest
from vkmtp.server.text import TextStream, completion_prompts, prompt_ids
from vkmtp.constrain.sampler import LogitShape
from vkmtp.engine.api import Request as EngineRequest
from vkmtp.text.reasoning import thinking_open_at_end
from vkmtp.text.reply import ReplyFormat
from vkmtp.text.tool_calls import tool_call_syntax


async def chat_completions(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, ChatRequest)
    prompt = ctx.chat_prompt(body)
    try:
        ids = ctx.info.tokenizer.encode(prompt, add_special=True, parse_special=True)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    reply_format = _reply_format(ctx, body, prompt)
    formatter = ChatFormatter(body.model or ctx.info.alias, body.include_usage, reply_format,
                              _probs_writer(ctx, body))
    shape = await asyncio.to_thread(logit_shape, body, ctx.info, prompt)   # compiling may take a while
    return await _respond(request, ctx, body, [(_submit(ctx, body, ids, body.token_budget, shape), formatter)])


def _reply_format(ctx: ServerContext, body: ChatRequest, prompt: str) -> ReplyFormat:
    """How this request's reply is read: the reasoning split (reasoning_format; whether the prompt opened a
    <think> block) and tool calls (the template's syntax; only when tools were offered)."""
    reasoning_format = body.reasoning_format or ctx.config.reasoning_format
    return ReplyFormat(
        reasoning=reasoning_format != "none",
        thinking_open=thinking_open_at_end(prompt),
        tool_syntax=tool_call_syntax(ctx.info.template.source) if body.tools else None,
        tools=tuple(body.tools or ()),
        parallel_tool_calls=body.parallel_tool_calls,
    )


async def completions(request: Request) -> Response:
    ctx = context_of(request)
    body = await read_request(request, CompletionRequest)
    ids = _prompt_ids(ctx, body.prompt)
    formatter = CompletionFormatter(body.model or ctx.info.alias, body.include_usage, _probs_writer(ctx, body))
    shape = await asyncio.to_thread(logit_shape, body, ctx.info)
    return await _respond(request, ctx, body, [(_submit(ctx, body, ids, body.token_budget, shape), formatter)])


async def llama_completion(request: Request) -> Response:
    """llama-server's /completion; a list of prompts gives one result each (a JSON array; streamed events
    carry their prompt's `index`)."""
    ctx = context_of(request)
    body = await read_request(request, LlamaCompletionRequest)
    try:
        prompts = completion_prompts(body.prompt, ctx.info.tokenizer)
    except ValueError as exc:
        raise bad_request(f"prompt{exc}" if str(exc).startswith("[") else f"prompt: {exc}") from None
    settings = generation_settings(
        _sampling(ctx, body),
        ctx.config.token_budget(body.n_predict),
        body.stop,
        ctx.engine_config.spec,
        ctx.speculative,
        ctx.engine_config.n_ctx,
    )
    for ids in prompts:
        _check_prompt(ctx, ids)
    shape = await asyncio.to_thread(logit_shape, body, ctx.info)
    pairs: list[tuple[Job, Formatter]] = []
    try:
        for index, ids in enumerate(prompts):
            text = ctx.info.tokenizer.decode(ids)
            formatter = LlamaFormatter(ctx.info.alias, text, settings, body.return_tokens, index,
                                       _probs_writer(ctx, body))
            pairs.append((_submit(ctx, body, ids, body.n_predict, shape), formatter))
    except ApiError:
        for job, _ in pairs:
            ctx.scheduler.cancel(job)
        raise
    return await _respond(request, ctx, body, pairs, as_list=len(prompts) > 1)


def _probs_writer(ctx: ServerContext, body: GenerationFields) -> ProbsWriter | None:
    """How the response writes token probabilities; None when the request asked for none."""
    return ProbsWriter(ctx.info.tokenizer) if body.probs_request() is not None else None


def _prompt_ids(ctx: ServerContext, prompt: object) -> list[int]:
    if prompt is None:
        raise bad_request("prompt: field required")
    try:
        return prompt_ids(prompt, ctx.info.tokenizer, allow_mixed=False)
    except ValueError as exc:
        raise bad_request(f"prompt: {exc}") from None


def _sampling(ctx: ServerContext, body: GenerationFields):
    try:
        return body.sampling_params(ctx.config.sampling)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _check_prompt(ctx: ServerContext, ids: list[int]) -> None:
    n_ctx = ctx.engine_config.n_ctx
    if not ids:
        raise bad_request("the prompt is empty (it has no tokens)")
    if len(ids) >= n_ctx:
        raise prompt_too_long(len(ids), n_ctx)


def _submit(ctx: ServerContext, body: GenerationFields, ids: list[int], budget: int | None,
            shape: LogitShape | None = None) -> Job:
    """Check the prompt and the slot, queue the job (`shape`: its grammar and logit bias)."""
    _check_prompt(ctx, ids)
    n_slots = ctx.config.engine.n_slots
    if body.id_slot >= n_slots:
        raise bad_request(f"id_slot: {body.id_slot} is out of range: the server has {n_slots} slot"
                          f"{'s' if n_slots > 1 else ''} (0..{n_slots - 1}; -1 for any)")
    eog = frozenset() if body.ignore_eos else ctx.info.tokenizer.eog_ids
    engine_request = EngineRequest(
        ids,
        _sampling(ctx, body),
        max_tokens=ctx.config.token_budget(budget),
        stop_ids=eog,
        cache_prompt=ctx.config.cache_prompt if body.cache_prompt is None else body.cache_prompt,
        slot=body.id_slot,
        spec=body.spec_override(),   # speculative.n_max / n_min / p_min (the engine checks them at submit)
        shape=shape,
        probs=body.probs_request(),   # logprobs / top_logprobs / n_probs / post_sampling_probs
    )
    job = Job(engine_request, TextStream(ctx.info.tokenizer, body.stop), asyncio.get_running_loop(),
              time_limit_ms=body.t_max_predict_ms)
    ctx.scheduler.submit(job)
    return job


async def _respond(
    request: Request,
    ctx: ServerContext,
    body: GenerationFields,
    pairs: list[tuple[Job, Formatter]],
    as_list: bool = False,
) -> Response:
    if body.stream:
        return StreamingResponse(
            _stream(ctx, pairs),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    outcomes = await _wait(request, ctx, [job for job, _ in pairs])
    if outcomes is None:  # the client is gone; nobody reads this
        return Response(status_code=499)
    results = [formatter.response(outcome) for (_, formatter), outcome in zip(pairs, outcomes)]
    return JSONResponse(results if as_list else results[0])


async def _stream(ctx: ServerContext, pairs: list[tuple[Job, Formatter]]) -> AsyncIterator[str]:
    """SSE events of the jobs, in the order they come. Starlette cancels this generator when the client
    disconnects; `finally` then cancels the jobs."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(job: Job, formatter: Formatter) -> None:
        try:
            async for item in job.updates():
                await queue.put((formatter, item))
        except ApiError as exc:
            await queue.put((formatter, exc))
        await queue.put((formatter, None))

    tasks = [asyncio.ensure_future(pump(job, formatter)) for job, formatter in pairs]
    first = pairs[0][1]
    try:
        for obj in first.start():
            yield sse(obj)
        left = len(tasks)
        while left:
            formatter, item = await queue.get()
            if item is None:
                left -= 1
            elif isinstance(item, ApiError):
                yield sse(item.body())
            else:
                objs = formatter.chunk(item) if isinstance(item, Chunk) else formatter.final_chunks(item)
                for obj in objs:
                    yield sse(obj)
        if first.stream_done:
            yield first.stream_done
    finally:
        for task in tasks:
            task.cancel()
        for job, _ in pairs:
            if not job.finished:
                ctx.scheduler.cancel(job)


async def _client_gone(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read, so only that can arrive)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait(request: Request, ctx: ServerContext, jobs: list[Job]) -> list[Outcome] | None:
    """The jobs' outcomes, or None if the client disconnected first (the jobs are then cancelled)."""
    results = asyncio.ensure_future(asyncio.gather(*(job.result() for job in jobs)))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({results, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for job in jobs:
            if not job.finished:
                ctx.scheduler.cancel(job)
        for task in (results, gone):
            if not task.done():
                task.cancel()
    return results.result() if results.done() and not results.cancelled() else None
