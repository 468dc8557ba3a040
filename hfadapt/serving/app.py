"""The HTTP API: `build_app` (a FastAPI app, usable in-process) and `serve` (uvicorn).

Routes: POST /v1/chat/completions, /v1/completions (causal-lm, seq2seq), /v1/audio/transcriptions
(speech-recognition), /v1/classify (our own: the inputs and JSON of `hfadapt predict` for the other
tasks), GET /v1/models, /health, /metrics. Every error is a 4xx/5xx in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from fastapi import Request

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.serving.auth import OPEN_PATHS, authorized, resolve_key
from hfadapt.serving.batching import Batcher, GenParams, GenResult, Job
from hfadapt.serving.errors import ApiError, Cancelled
from hfadapt.serving.metrics import UNKNOWN, ServeMetrics
from hfadapt.serving.registry import GENERATIVE, Registry, Served
# FastAPI reads the route signatures' annotations at runtime: the request models are imported here
from hfadapt.serving.schemas import ChatRequest, ClassifyRequest, CompletionRequest, Sampling

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("hfadapt.serve")
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/audio/transcriptions", "/v1/classify", "/v1/models",
             "/health", "/metrics")
MAX_BODY_MB = 25.0  # OpenAI's limit for audio uploads
MAX_TOKENS = 4096


class Gate:
    """ASGI middleware in front of every route: the API key, the body size limit, and the metrics (the
    adapter a route names is in scope["state"]; latency runs to the last byte, streams included)."""

    def __init__(self, app: Any, key: str | None, max_body: int, metrics: ServeMetrics) -> None:
        self.app, self.key, self.max_body, self.metrics = app, key, max_body, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        scope.setdefault("state", {})

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_status)
        finally:
            path = scope["path"]
            if path.startswith("/v1/"):
                endpoint = path if path in ENDPOINTS else "other"
                self.metrics.observe(scope["state"].get("adapter", UNKNOWN), endpoint, status[0], time.perf_counter() - start)

    async def _handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = dict(scope["headers"])
        if self.key and scope["path"] not in OPEN_PATHS:
            header = headers.get(b"authorization")
            if not authorized(header.decode("latin-1") if header else None, self.key):
                return await _send(send, ApiError(401, "missing or wrong API key: send the header Authorization: Bearer <key>",
                                                  code="invalid_api_key"))
        declared = headers.get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > self.max_body
        except ValueError:
            return await _send(send, ApiError(400, "Content-Length is not a number"))
        if too_big:
            return await _send(send, ApiError(413, f"the request body is over this server's limit of {self.max_body} bytes", code="body_too_large"))
        body, more = b"", True
        while more:  # read it whole (chunked bodies too), so the limit holds however it is sent
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await _send(send, ApiError(413, f"the request body is over this server's limit of {self.max_body} bytes", code="body_too_large"))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the client's disconnect, which a stream listens for

        await self.app(scope, replay, send)


async def _send(send: Callable, error: ApiError) -> None:
    data = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _as_api_error(e: BaseException) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, HfadaptError):
        return ApiError(400, first_line(e))
    if isinstance(e, Cancelled):
        return ApiError(499, "the client closed the request", code="cancelled")
    log.error("serve: internal error: %s: %s", type(e).__name__, first_line(e))
    return ApiError(500, f"internal error ({type(e).__name__}); the server keeps serving")


class Service:
    """What the routes share: the loaded adapters, the batch worker and the limits."""

    def __init__(self, registry: Registry, batcher: Batcher, max_tokens: int) -> None:
        self.registry, self.batcher, self.max_tokens = registry, batcher, max_tokens

    def served(self, request: Request, name: str, kinds: tuple[str, ...], endpoint: str) -> Served:
        served = self.registry.get(name)
        if served is None:
            raise ApiError(404, f"the model '{name}' is not served here; GET /v1/models lists the served ones",
                           param="model", code="model_not_found")
        request.scope["state"]["adapter"] = served.name
        if served.kind not in kinds:
            raise ApiError(400, f"'{name}' is a {served.task} model; {endpoint} serves {' and '.join(_KIND_TASKS[k] for k in kinds)}",
                           param="model", code="wrong_task")
        return served

    def params(self, served: Served, req: Sampling) -> GenParams:
        g = served.recipe.generation
        max_tokens = req.token_limit() if req.token_limit() is not None else g.max_new_tokens
        if max_tokens > self.max_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {self.max_tokens}", param="max_tokens")
        if req.temperature is None:  # the recipe's decoding, as `hfadapt predict` uses it (greedy by default)
            do_sample, temperature = g.do_sample, g.temperature
        else:
            do_sample, temperature = req.temperature > 0, req.temperature
        top_p = req.top_p if req.top_p is not None else g.top_p
        return GenParams(max_tokens=max_tokens, do_sample=do_sample, temperature=temperature if do_sample else None,
                         top_p=top_p if do_sample else None, seed=req.seed, stop=tuple(req.stop), num_beams=g.num_beams)

    async def run(self, job: Job) -> Any:
        try:
            self.batcher.submit(job)
        except RuntimeError:
            raise ApiError(503, "the server is shutting down", code="shutting_down", type="server_error") from None
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancelled.set()
            raise
        except Exception as e:  # noqa: BLE001
            raise _as_api_error(e) from None


_KIND_TASKS = {"generate": "causal-lm and seq2seq models", "transcribe": "speech-recognition models",
               "classify": "classification, token-classification and question-answering models"}


def _completion_prompt(served: Served, prompt: str, max_tokens: int) -> Callable[[], list[int]]:
    """The prompt's ids as `hfadapt predict` encodes it (a chat-trained run: a user turn)."""
    def encode() -> list[int]:
        if GENERATIVE[served.task] == "seq2seq":
            return served.task_obj.encode_inputs([prompt], served.processor, served.recipe)["input_ids"][0].tolist()
        from hfadapt.tasks.language import encode_prompts

        return encode_prompts([prompt], served.processor, served.recipe)["input_ids"][0].tolist()
    return _checked(served, encode, max_tokens)


def _chat_prompt(served: Served, messages: list[dict[str, str]], max_tokens: int) -> Callable[[], list[int]]:
    tok = served.processor
    if not getattr(tok, "chat_template", None):
        raise ApiError(400, f"'{served.name}' has no chat template; use /v1/completions", param="messages", code="no_chat_template")

    def encode() -> list[int]:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if GENERATIVE[served.task] == "seq2seq":
            return served.task_obj.encode_inputs([text], tok, served.recipe)["input_ids"][0].tolist()
        return tok(text, add_special_tokens=False)["input_ids"]
    return _checked(served, encode, max_tokens)


def _checked(served: Served, encode: Callable[[], list[int]], max_tokens: int) -> Callable[[], list[int]]:
    """The encoder, plus the model's context limit: a request that would overrun it fails alone, with a 400."""
    config = served.group.model.config
    limit = None if config.is_encoder_decoder else (getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None))

    def run() -> list[int]:
        try:
            ids = encode()
        except HfadaptError as e:
            raise ApiError(400, first_line(e)) from None
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if limit is not None and len(ids) + max_tokens > limit:
            raise ApiError(400, f"the prompt is {len(ids)} tokens and max_tokens {max_tokens}; the model reads at most {limit} in all",
                           param="max_tokens", code="context_length_exceeded")
        return ids
    return run


def _usage(results: list[GenResult]) -> dict[str, int]:
    p, c = sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def build_app(adapters: list[str] | Registry, api_key: str | None = None, max_batch_size: int = 32, max_wait_ms: float = 10.0,
              max_body_mb: float = MAX_BODY_MB, max_tokens: int = MAX_TOKENS, say: Callable[[str], None] = print,
              engine: str = "hf") -> FastAPI:
    """The server's FastAPI app for `adapters` (ADAPTER specs, or a loaded Registry). The batch worker starts
    and stops with the app's lifespan (uvicorn, or `with TestClient(app)`). `engine="vllm"`: causal-lm
    generation on vLLM (a CUDA GPU; untested, see vllm_engine.py)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if max_batch_size < 1 or max_wait_ms < 0 or max_body_mb <= 0 or max_tokens < 1:
        raise HfadaptError("serve: --max-batch-size, --max-tokens and --max-body-mb must be positive, --max-wait-ms not negative")
    check_engine(engine)
    registry = adapters if isinstance(adapters, Registry) else _load(adapters, say)
    generator = None
    if engine == "vllm":
        from hfadapt.serving.vllm_engine import VllmGenerator

        generator = VllmGenerator(registry)
    metrics = ServeMetrics()
    batcher = Batcher(max_batch_size, max_wait_ms, on_batch=metrics.batch_size.observe,
                      on_tokens=lambda name, n: metrics.tokens.labels(name).inc(n), engine=generator)
    service = Service(registry, batcher, max_tokens)
    key = resolve_key(api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)  # finish what is queued

    app = FastAPI(title="hfadapt serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        err = (e.errors() or [{}])[0]
        if err.get("type") == "json_invalid":
            return JSONResponse(ApiError(400, "the request body is not valid JSON", code="invalid_json").body(), status_code=400)
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "form", "query")]
        param = ".".join(loc) or None
        msg = err.get("msg", "invalid request")
        return JSONResponse(ApiError(400, f"{param}: {msg}" if param else msg, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if e.status_code == 404 else None
        return JSONResponse(ApiError(e.status_code, str(e.detail), code=code).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> JSONResponse:
        err = _as_api_error(e)
        return JSONResponse(err.body(), status_code=err.status)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": len(registry.served)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    @app.get("/v1/models")
    async def models() -> dict:
        now = int(time.time())
        return {"object": "list", "data": [
            {"id": s.name, "object": "model", "created": now, "owned_by": "hfadapt", "task": s.task, "base": s.base,
             "adapter": s.peft_name is not None} for s in registry.adapters()]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        served = service.served(request, req.model, ("generate",), "/v1/completions")
        params = service.params(served, req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if req.stream:
            if len(prompts) != 1:
                raise ApiError(400, "stream: one prompt per streamed request", param="prompt")
            job = Job(served, params=params, prepare=_completion_prompt(served, prompts[0], params.max_tokens))
            return await _stream(service, job, req, "text_completion", lambda d: {"text": d, "index": 0, "logprobs": None})
        results = await asyncio.gather(*(service.run(Job(served, params=params, prepare=_completion_prompt(served, p, params.max_tokens))) for p in prompts))
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": served.name,
                "choices": [{"text": r.text, "index": i, "logprobs": None, "finish_reason": r.finish_reason} for i, r in enumerate(results)],
                "usage": _usage(results)}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Any:
        served = service.served(request, req.model, ("generate",), "/v1/chat/completions")
        params = service.params(served, req)
        try:
            messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        except ValueError as e:
            raise ApiError(400, str(e), param="messages") from None
        job = Job(served, params=params, prepare=_chat_prompt(served, messages, params.max_tokens))
        if req.stream:
            return await _stream(service, job, req, "chat.completion.chunk", lambda d: {"index": 0, "delta": {"content": d}, "logprobs": None})
        r = await service.run(job)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": served.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text}, "logprobs": None, "finish_reason": r.finish_reason}],
                "usage": _usage([r])}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Any:
        form = await _form(request)
        served = service.served(request, _field(form, "model"), ("transcribe",), "/v1/audio/transcriptions")
        fmt = form.get("response_format") or "json"
        if fmt not in ("json", "text"):
            raise ApiError(400, f"response_format '{fmt}' is not supported; json or text", param="response_format")
        uploads = form.getlist("file")
        if len(uploads) != 1 or isinstance(uploads[0], str):
            raise ApiError(400, "send one audio file as the multipart field 'file'", param="file")
        [row] = await _predict_files(service, served, uploads)
        text = row.get("text", "")
        return PlainTextResponse(text) if fmt == "text" else {"text": text}

    @app.post("/v1/classify")
    async def classify(request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):  # image and audio tasks: files
            form = await _form(request)
            served = service.served(request, _field(form, "model"), ("classify",), "/v1/classify")
            uploads = [f for f in form.getlist("file") if not isinstance(f, str)]
            if not uploads:
                raise ApiError(400, "send the files as multipart fields named 'file'", param="file")
            rows = await _predict_files(service, served, uploads)
        else:
            try:
                body = ClassifyRequest.model_validate_json(await request.body())
            except ValueError as e:
                raise _invalid_body(e) from None
            served = service.served(request, body.model, ("classify",), "/v1/classify")
            if served.task_obj.modality != "text":
                raise ApiError(400, f"'{served.name}' is a {served.task} model: send files as multipart/form-data fields 'file'", param="input")
            rows = await service.run(Job(served, items=list(body.input)))
        return {"object": "list", "model": served.name, "data": rows}

    app.add_middleware(Gate, key=key, max_body=int(max_body_mb * 1024 * 1024), metrics=metrics)
    return app


def _invalid_body(e: ValueError) -> ApiError:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        err = e.errors()[0]
        if err.get("type") == "json_invalid":
            return ApiError(400, "the request body is not valid JSON", code="invalid_json")
        param = ".".join(str(x) for x in err.get("loc", ())) or None
        return ApiError(400, f"{param}: {err.get('msg')}" if param else str(err.get("msg")), param=param)
    return ApiError(400, first_line(e))


async def _form(request: Request) -> Any:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send multipart/form-data (fields 'model' and 'file')")
    try:
        return await request.form()
    except Exception as e:  # noqa: BLE001 - a malformed multipart body
        raise ApiError(400, f"the multipart body could not be read: {first_line(e)}") from None


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"the multipart field '{name}' is missing", param=name)
    return value


async def _predict_files(service: Service, served: Served, uploads: list[Any]) -> list[dict]:
    """Each upload in a temporary file (the task's predict reads paths), the answers named by the client's file name."""
    with tempfile.TemporaryDirectory(prefix="hfadapt-serve-") as tmp:
        paths = []
        for i, upload in enumerate(uploads):
            suffix = Path(upload.filename or "").suffix[:16]
            path = Path(tmp) / f"{i}{suffix}"
            path.write_bytes(await upload.read())
            paths.append(str(path))
        rows = await service.run(Job(served, items=paths))
    return [{**row, "input": upload.filename or f"file{i}"} for i, (row, upload) in enumerate(zip(rows, uploads))]


async def _stream(service: Service, job: Job, req: Sampling, obj: str, choice: Callable[[str], dict]) -> Any:
    """Server-sent events in OpenAI's chunk format. The first event is awaited before answering, so a request
    that fails before its first token gets a plain 4xx."""
    from fastapi.responses import StreamingResponse

    loop = asyncio.get_running_loop()
    events: asyncio.Queue[str | None] = asyncio.Queue()

    def put(delta: str | None) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, delta)
        except RuntimeError:  # the event loop is gone (shutdown): nobody listens any more
            pass

    job.stream = put
    future = service.run(job)
    task = asyncio.ensure_future(future)
    first = await events.get()
    if first is None:
        await task  # raises the request's error (as an ApiError)
    chat = obj == "chat.completion.chunk"
    base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()),
            "model": job.served.name}

    async def body() -> AsyncIterator[str]:
        try:
            if chat:
                yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]})
            delta = first
            while delta is not None:
                yield _sse({**base, "choices": [{**choice(delta), "finish_reason": None}]})
                delta = await events.get()
            try:
                result: GenResult = await task
            except ApiError as e:
                yield _sse(e.body())
                return
            end = choice("")
            if chat:
                end["delta"] = {}
            yield _sse({**base, "choices": [{**end, "finish_reason": result.finish_reason}]})
            if req.include_usage():
                yield _sse({**base, "choices": [], "usage": _usage([result])})
            yield _sse("[DONE]")
        finally:
            job.cancelled.set()  # a client gone mid-stream: its row leaves the batch at the next token
            if not task.done():
                task.cancel()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _load(specs: list[str], say: Callable[[str], None]) -> Registry:
    from hfadapt.serving.registry import load

    return load(specs, say=say)


def check_engine(engine: str) -> None:
    """--engine vllm needs vLLM and a CUDA GPU; refused in one line otherwise."""
    if engine == "hf":
        return
    if engine != "vllm":
        raise HfadaptError(f"serve --engine: unknown engine '{engine}'; hf or vllm")
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise HfadaptError("serve --engine vllm: vLLM is not installed (pip install vllm, on a machine with a CUDA GPU)")
    import torch

    if not torch.cuda.is_available():
        raise HfadaptError("serve --engine vllm: vLLM needs a CUDA GPU and none is visible")


def serve(adapters: list[str], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_batch_size: int = 32,
          max_wait_ms: float = 10.0, max_body_mb: float = MAX_BODY_MB, max_tokens: int = MAX_TOKENS, engine: str = "hf",
          verbose: bool = False) -> None:
    """Load `adapters` and serve them until SIGINT/SIGTERM (then stop taking requests and finish those in flight).
    `verbose` adds uvicorn's own info lines to the access log."""
    import uvicorn

    check_engine(engine)  # before anything loads
    app = build_app(adapters, api_key=api_key, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                    max_body_mb=max_body_mb, max_tokens=max_tokens, engine=engine)
    print(f"serve: listening on http://{host}:{port} (OpenAI-compatible API under /v1)", flush=True)
    uvicorn.run(app, host=host, port=port, log_config=_log_config(verbose), timeout_graceful_shutdown=None)


def _log_config(verbose: bool) -> dict:
    """Uvicorn's access log (one line per request: client, method, path, status) and its warnings only."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"access": {"()": "uvicorn.logging.AccessFormatter", "fmt": '%(client_addr)s "%(request_line)s" %(status_code)s', "use_colors": False},
                       "plain": {"format": "%(message)s"}},
        "handlers": {"access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
                     "plain": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
                    "uvicorn.error": {"handlers": ["plain"], "level": "INFO" if verbose else "WARNING", "propagate": False},
                    "hfadapt.serve": {"handlers": ["plain"], "level": "INFO", "propagate": False}},
    }
