"""The HTTP API: OpenAI's /v1/chat/completions, /v1/completions and /v1/models, plus /healthz,
/readyz and /metrics. Every answer names the version that produced it (headers
`X-Lamina-Version`, `X-Lamina-Artifact-Sha256`, and a `lamina` field in the body). Errors are
OpenAI-style JSON with the matching status; a failure inside never shows its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lamina.serve import api
from lamina.serve.api import ApiError
from lamina.serve.engine import Params
from lamina.serve.job import Job
from lamina.serve.keys import Denied, KeyStore

log = logging.getLogger("lamina.serve")


def create_app(server) -> FastAPI:
    app = FastAPI(title="Lamina", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        server.metrics.errors.labels(str(e.status), e.code).inc()
        headers = {"Retry-After": str(int(e.retry_after))} if e.retry_after else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return await _api_error(request, ApiError(e.status_code, "not_found" if e.status_code == 404 else "bad_request",
                                                  str(e.detail)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error on %s", request.url.path)  # the traceback stays in the server log
        return await _api_error(request, ApiError(500, "internal_error", "internal server error"))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        ready, detail = server.readiness()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        server.metrics.sample_engines([e.load() for e in server.pool.engines()])
        server.metrics.sample_drift(server.observer.prompt_drift(server.drift_window_s))
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        record = _authenticate(server, request)
        data = []
        for ref in server.router.refs():
            served = _peek(server, ref)
            if served is None or (record and not KeyStore.may_call(record, ref)):
                continue
            v = served.version
            data.append({"id": ref, "object": "model", "created": api.now(), "owned_by": "lamina",
                         "parent": f"sha256:{v.base_sha256}" if v.base_sha256 else None, "lamina": _names(v)})
        return {"object": "list", "data": data}

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        """An operator's rating of a response (by its id), stored with the version that gave it."""
        from lamina.errors import LaminaError

        body = await _read_json(server, request)
        _authenticate(server, request)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ApiError(400, "invalid_request", "expected {\"id\": response id, \"rating\": number}", "id")
        try:
            version = server.observer.feedback(body["id"], body.get("rating"))
        except LaminaError as e:
            raise ApiError(404 if e.where == "id" else 400, "invalid_request", str(e), e.where) from None
        if isinstance(body.get("rating"), int | float) and not isinstance(body.get("rating"), bool):
            server.metrics.feedback.labels(version).observe(float(body["rating"]))
        return {"id": body["id"], "version": version}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _complete(server, request, api.ChatRequest)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _complete(server, request, api.CompletionRequest)

    return app


def _names(v) -> dict:
    return {"version": v.key, "artifact_sha256": v.artifact_sha256, "base_sha256": v.base_sha256,
            "method": v.method}


def _peek(server, ref: str):
    key = server.router.pick(ref)
    return server.pool.served.get(key) if key else None


def _authenticate(server, request: Request) -> dict | None:
    if not server.spec.auth:
        return None
    try:
        return server.keys.authenticate(request.headers.get("authorization"))
    except Denied as d:
        server.metrics.unauthorized.labels(d.code).inc()
        client = request.client.host if request.client else "-"
        log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, d.code)
        raise ApiError(d.status, d.code, d.message) from None


async def _read_json(server, request: Request) -> object:
    limit = server.spec.max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        raise ApiError(413, "request_too_large", f"request body over {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "request_too_large", f"request body over {limit} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None


def _check(server, record: dict | None, req) -> int:
    refs = server.router.refs()
    if req.model not in refs:
        raise ApiError(404, "model_not_found",
                       f"model {req.model!r} is not served here; servable: {', '.join(refs) or 'none'}", "model")
    if record is not None and not KeyStore.may_call(record, req.model):
        raise ApiError(403, "model_not_allowed", f"this key may not call {req.model!r}", "model")
    spec = server.spec
    max_tokens = req.max_completion_tokens or req.max_tokens or spec.default_max_tokens
    if max_tokens > spec.max_tokens:
        raise ApiError(413, "max_tokens_too_large", f"max_tokens over this server's cap of {spec.max_tokens}",
                       "max_tokens")
    if req.n > spec.max_n:
        raise ApiError(400, "invalid_value", f"n over this server's cap of {spec.max_n}", "n")
    if record is not None:
        try:
            server.keys.admit(record)
        except Denied as d:
            raise ApiError(d.status, d.code, d.message, retry_after=d.retry_after) from None
    return max_tokens


def _acquire(server, ref: str, caller: str = ""):
    for _ in range(3):  # a swap may retire the picked version between pick and acquire
        key = server.router.pick(ref, caller)
        try:
            return server.pool.acquire(key) if key else None
        except Exception:
            continue
    raise ApiError(503, "not_ready", f"{ref} has no version ready to serve")


def _prompt(served, req, max_tokens: int) -> list[int]:
    tok = served.tokenizer
    if isinstance(req, api.ChatRequest):
        if not tok.chat_template:
            raise ApiError(400, "no_chat_template", "this model has no chat template; use /v1/completions", "messages")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tok(req.text())["input_ids"]
    if not ids:
        raise ApiError(400, "empty_prompt", "the prompt is empty", "prompt")
    if len(ids) + max_tokens > served.context:
        raise ApiError(400, "context_length_exceeded",
                       f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceed the model's context "
                       f"of {served.context}", "max_tokens")
    return ids


async def _complete(server, request: Request, kind):
    started = time.perf_counter()
    body = await _read_json(server, request)
    record = _authenticate(server, request)
    req = api.parse(kind, body)
    max_tokens = _check(server, record, req)
    # A rollout's split is sticky per caller: the request's `user`, else the key's identity.
    caller = str(body.get("user") or (record["id"] if record else "")) if isinstance(body, dict) else ""
    served = _acquire(server, req.model, caller)
    try:
        prompt = _prompt(served, req, max_tokens)
        params = [Params(max_tokens, req.temperature, req.top_p, None if req.seed is None else req.seed + i)
                  for i in range(req.n)]
        job = Job(served, prompt, params, req.stops(), server.guard)
        job.id = api.new_id("chatcmpl" if isinstance(req, api.ChatRequest) else "cmpl")
    except BaseException:
        server.pool.release(served)
        raise
    v = served.version
    headers = {"X-Lamina-Version": v.key, "X-Lamina-Artifact-Sha256": v.artifact_sha256}
    server.metrics.inflight.labels(v.key).inc()
    ctx = {"record": record, "req": req, "started": started, "endpoint": request.url.path,
           "prompt": prompt, "params": params}
    if req.stream:
        return StreamingResponse(_stream(server, job, ctx), media_type="text/event-stream", headers=headers)
    status = 500
    try:
        await job.run()
        status = 200
    finally:
        job.cancel()
        _finish(server, job, ctx, status)
    _shadow(server, req, job, prompt, params)
    return JSONResponse(_full_body(job, req), headers=headers)


_SHADOWS: set = set()  # running shadow copies (kept referenced until done)


def _shadow(server, req, job: Job, prompt: list[int], params: list) -> None:
    """In a shadow rollout, the challenger answers a copy after the user has the champion's
    answer; the two are compared as live events. The user's response is never touched."""
    route = server.router.get(req.model)
    number = route.plan.shadow if route is not None and route.plan is not None else None
    if number is None:
        return
    key = f"{route.plan.name}/{number}"
    try:
        served = server.pool.acquire(key)
    except Exception:  # not loaded (yet): no copy this time
        return

    async def run() -> None:
        started, status = time.perf_counter(), 500
        copy = Job(served, prompt, params, req.stops(), server.guard)
        try:
            await copy.run()
            status = 200
        except Exception as e:  # a failing challenger is what shadow mode is for: count it
            log.warning("shadow copy on %s failed: %s", key, e)
        finally:
            copy.cancel()
            server.pool.release(served)
        server.metrics.shadow_copies.labels(key, "ok" if status == 200 else "failed").inc()
        server.observer.shadowed(
            job.served.version.key, key, "\n".join(c.output for c in job.choices),
            "\n".join(c.output for c in copy.choices) if status == 200 else None,
            status=status, latency_s=time.perf_counter() - started,
            trips=[t for c in copy.choices for t in c.text.trips], prompt_tokens=len(prompt))

    task = asyncio.get_running_loop().create_task(run())
    _SHADOWS.add(task)
    task.add_done_callback(_SHADOWS.discard)


def _base(job: Job, req, chunk: bool) -> dict:
    chat = isinstance(req, api.ChatRequest)
    obj = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
    v = job.served.version
    return {"id": job.id, "object": obj, "created": api.now(), "model": req.model,
            "system_fingerprint": f"{v.key}:{v.artifact_sha256[:12]}", "lamina": _names(v)}


def _usage(job: Job) -> dict:
    n = job.completion_tokens
    return {"prompt_tokens": len(job.prompt), "completion_tokens": n, "total_tokens": len(job.prompt) + n}


def _full_body(job: Job, req) -> dict:
    chat = isinstance(req, api.ChatRequest)
    choices = [{"index": i, "finish_reason": c.finish, "logprobs": None,
                **({"message": {"role": "assistant", "content": c.output}} if chat else {"text": c.output})}
               for i, c in enumerate(job.choices)]
    return {**_base(job, req, False), "choices": choices, "usage": _usage(job)}


def _sse(obj: dict) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def _stream(server, job: Job, ctx: dict):
    req = ctx["req"]
    chat = isinstance(req, api.ChatRequest)
    usage = req.stream_options is not None and req.stream_options.include_usage
    extra = {"usage": None} if usage else {}
    status = 499  # unless set below: the client went away mid-stream
    try:
        if chat:
            for i in range(len(job.choices)):
                delta = {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                yield _sse({**_base(job, req, True), "choices": [delta], **extra})
        async for i, text, finish in job.events():
            part = {"delta": {"content": text} if text else {}} if chat else {"text": text}
            choice = {"index": i, **part, "finish_reason": finish, "logprobs": None}
            yield _sse({**_base(job, req, True), "choices": [choice], **extra})
        if usage:
            yield _sse({**_base(job, req, True), "choices": [], "usage": _usage(job)})
        yield b"data: [DONE]\n\n"
        status = 200
    except ApiError as e:  # the headers are sent: the error goes in the stream, as OpenAI does
        server.metrics.errors.labels(str(e.status), e.code).inc()
        status = e.status
        yield _sse(e.body())
    finally:  # also when the client goes away mid-stream: its sequences leave the batch
        job.cancel()
        _finish(server, job, ctx, status)
    if status == 200:  # a shadow challenger answers a copy of a finished stream too
        _shadow(server, req, job, ctx["prompt"], ctx["params"])


def _finish(server, job: Job, ctx: dict, status: int) -> None:
    served, m = job.served, server.metrics
    server.pool.release(served)
    key = served.version.key
    m.inflight.labels(key).dec()
    elapsed = time.perf_counter() - ctx["started"]
    m.requests.labels(key, ctx["endpoint"], str(status)).inc()
    m.latency.labels(key).observe(elapsed)
    if job.first_token is not None:
        m.ttft.labels(key).observe(job.first_token - job.started)
    m.prompt_tokens.labels(key).inc(len(job.prompt))
    m.output_tokens.labels(key).inc(job.completion_tokens)
    record = ctx["record"]
    if record is not None:
        server.keys.spend(record, len(job.prompt) + job.completion_tokens)
    trips = [t for c in job.choices for t in c.text.trips]
    for kind, action in trips:
        m.guard_trips.labels(key, kind, action).inc()
    if trips:
        log.warning("guard %s on %s: %s", ctx["endpoint"], key, ", ".join(f"{k} {a}" for k, a in trips))
    server.observer.finished(key, status=status, latency_s=elapsed, trips=trips,
                             outputs=[c.output for c in job.choices], prompt_tokens=len(job.prompt),
                             response_id=job.id)
    entry = {"time": api.now(), "endpoint": ctx["endpoint"], "model": ctx["req"].model, "version": key,
             "artifact_sha256": served.version.artifact_sha256, "key": record["id"] if record else None,
             "identity": record["user"] if record else None, "status": status,
             "prompt_tokens": len(job.prompt), "completion_tokens": job.completion_tokens,
             "latency_s": round(elapsed, 4),
             "ttft_s": round(job.first_token - job.started, 4) if job.first_token else None,
             "finish": [c.finish for c in job.choices], "guard": [f"{k}:{a}" for k, a in trips]}
    if server.reqlog.content:
        server.reqlog.write(entry, served.tokenizer.decode(job.prompt), "\n".join(c.output for c in job.choices))
    else:
        server.reqlog.write(entry)
