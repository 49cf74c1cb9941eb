"""The showcase (效果展示): a local web page that runs the stages' trained models.

    python scripts/demo.py                      # http://127.0.0.1:8000
    python scripts/demo.py --port 8080 --root /path/with/stageN_x/checkpoints

Tabs: classify (class probabilities for a sentence), generate (text streamed to the page token by token, as
server-sent events), translate (French and the attention map as a heatmap), compare (the same input through every
available model of a task, with the time each took). The models come from the stages' ``serve.py`` adapters via
``scripts/showcase.py``; this file is only the web layer (FastAPI + one plain HTML page, no build step) and knows
no model code. The page lists every model with its checkpoint, or the command that makes a missing one.

Safety: bound to 127.0.0.1 unless ``--host`` says otherwise; inputs are capped (``LIMITS``); checkpoints are read
only with ``torch.load(weights_only=True)`` (``scripts.checkpoint.load_checkpoint``); a bad request, a missing or
broken checkpoint, or a model that fails is a JSON ``{"error": ...}`` with a 4xx/5xx status, never a dead server.

API (JSON in and out): ``GET /api/models``; ``POST /api/classify {model, text}``; ``POST /api/generate {model,
prompt, max_new_tokens, temperature, top_k, top_p, seed, stream}`` (``text/event-stream``: ``data: {"text": ...}``
per piece, then ``event: done``; with ``"stream": false`` one JSON answer); ``POST /api/translate {model, text,
beam_size}``; ``POST /api/compare {task, text, ...}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # `python scripts/demo.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from scripts import REPO_ROOT
from scripts.showcase import Registry, ShowcaseError

PAGE = Path(__file__).resolve().parent / "demo_static" / "index.html"
LIMITS = {"text_chars": 1000, "max_new_tokens": 500, "top_k": 1000, "beam_size": 8, "temperature": 5.0}
Text = Field(default="", max_length=LIMITS["text_chars"])


class ClassifyRequest(BaseModel):
    model: str
    text: str = Text


class SamplingParams(BaseModel):
    max_new_tokens: int = Field(default=200, ge=1, le=LIMITS["max_new_tokens"])
    temperature: float = Field(default=0.8, ge=0, le=LIMITS["temperature"])
    top_k: int = Field(default=0, ge=0, le=LIMITS["top_k"])
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = Field(default=1337, ge=0, le=2**31 - 1)


class GenerateRequest(SamplingParams):
    model: str
    prompt: str = Text
    stream: bool = True


class TranslateRequest(BaseModel):
    model: str
    text: str = Text
    beam_size: int = Field(default=5, ge=1, le=LIMITS["beam_size"])


class CompareRequest(SamplingParams):
    task: Literal["classify", "generate", "translate"]
    text: str = Text
    beam_size: int = Field(default=5, ge=1, le=LIMITS["beam_size"])


def error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "kind": kind}, status_code=status)


def need_text(text: str, what: str = "text") -> None:
    if not text.strip():
        raise ShowcaseError(400, "bad_input", f"the {what} is empty; type a sentence")


def sse(event: str | None, data: dict) -> str:
    """One server-sent event; JSON keeps newlines in the text out of the frame."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def make_app(registry: Registry) -> FastAPI:
    app = FastAPI(title="my_llm showcase", docs_url=None, redoc_url=None)

    @app.exception_handler(ShowcaseError)
    async def showcase_error(request: Request, e: ShowcaseError):
        return error(e.status, e.kind, e.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error(422, "bad_input", "; ".join(parts))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        return error(500, "internal", f"{type(e).__name__}: {e}")

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/models")
    def models():
        return {"models": registry.listing(), "adapter_errors": registry.adapter_errors, "limits": LIMITS,
                "root": str(registry.root)}

    @app.post("/api/classify")
    def classify(req: ClassifyRequest):
        need_text(req.text)
        result, ms = registry.call(req.model, "classify", text=req.text)
        return {"model": req.model, **result, "ms": ms}

    @app.post("/api/translate")
    def translate(req: TranslateRequest):
        need_text(req.text)
        result, ms = registry.call(req.model, "translate", text=req.text, beam_size=req.beam_size)
        return {"model": req.model, **result, "ms": ms}

    @app.post("/api/generate")
    def generate(req: GenerateRequest):
        params = req.model_dump(exclude={"model", "stream"})
        if not req.stream:
            result, ms = registry.call(req.model, "generate", **params)
            return {"model": req.model, **result, "ms": ms}
        t0 = time.perf_counter()
        pieces = registry.stream(req.model, **params)  # a bad prompt or checkpoint fails here, as JSON

        def events():
            n = 0
            try:
                for piece in pieces:
                    n += 1
                    yield sse(None, {"text": piece})
            except ShowcaseError as e:
                yield sse("error", e.as_dict())
                return
            yield sse("done", {"pieces": n, "ms": 1000 * (time.perf_counter() - t0)})

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/compare")
    def compare(req: CompareRequest):
        """Every model of the task, one after the other: its answer (or why there is none) and its time."""
        need_text(req.text)
        if req.task == "classify":
            params = {"text": req.text}
        elif req.task == "translate":
            params = {"text": req.text, "beam_size": req.beam_size}
        else:
            params = {"prompt": req.text, **req.model_dump(include=set(SamplingParams.model_fields))}
        rows = []
        for info in registry.listing():
            if info["task"] != req.task:
                continue
            row = {"model": info["id"], "title": info["title"], "status": info["status"]}
            try:
                result, ms = registry.call(info["id"], req.task, **params)
                rows.append({**row, "ok": True, "result": result, "ms": ms})
            except ShowcaseError as e:
                rows.append({**row, "ok": False, "error": e.message, "kind": e.kind, "ms": None})
        return {"task": req.task, "results": rows}

    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Serve the showcase page: the stages' models in a browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--root", type=Path, default=REPO_ROOT,
                   help="folder whose stageN_x/checkpoints/ hold the models (default: this repository)")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: --root {args.root} is not a folder", file=sys.stderr)
        return 2

    import uvicorn

    registry = Registry(args.root)
    for info in registry.listing():
        where = info["checkpoint"] or info["error"]
        print(f"  {info['task']:9s} {info['id']:28s} {info['status']:8s} {where}", flush=True)
    for bad in registry.adapter_errors:
        print(f"  warning: {bad['error']}", file=sys.stderr, flush=True)
    print(f"showcase: http://{args.host}:{args.port}/  (Ctrl-C to stop)", flush=True)
    uvicorn.run(make_app(registry), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
