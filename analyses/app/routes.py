"""The explorer's HTTP routes (Starlette). Every request names its browser tab with the
`X-Interp-Session` header; bad input answers 400 {"error": the library's message}.

    GET  /                      the page (static/index.html); /static/*: its script and style
    GET  /assets/views.js|.css  the package's view scripts and style (interp.views.assets())
    GET  /api/info              the model, its sizes, the sites and the defaults
    POST /api/predict           {prompt, k}            -> top next tokens
    POST /api/attention         {prompt}               -> attention patterns
    POST /api/logit_lens        {prompt, pos}          -> the logit lens
    POST /api/dla               {prompt, answer, counterfactual} -> direct logit attribution
    POST /api/dashboard         {unit, layer, index, prompt}     -> a head / neuron / feature
    POST /api/jobs              {kind: sweep|trace|localise|edit|graph, params: {...}} -> {id, status, ...}
                                (graph: {prompt, targets, node_threshold, edge_threshold, ...} -> the
                                attribution graph browser, counts and scores; 400 without transcoders)
    GET  /api/jobs/{id}         progress (done / total), then the result or the error
    DELETE /api/jobs/{id}  or  POST /api/jobs/{id}/cancel: stop at the next progress step
    GET  /api/edits             the session's edits
    POST /api/edits/compare     {prompts}   -> top token without and with the session's edits
    POST /api/edits/revert      {index}     -> drop that edit and later ones (none given: all)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from analyses.app import compute
from analyses.app.jobs import Jobs, error_message
from analyses.app.state import SESSION_HEADER, AppState
from analyses.app.views import plain

STATIC = Path(__file__).parent / "static"
# The page may load only what this server serves: no CDN, no other origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'")
BAD_INPUT = (ValueError, TypeError, KeyError, IndexError, LookupError, FileNotFoundError, RuntimeError)
FIRST_STEP_WAIT_S = 20.0  # how long POST /api/jobs waits for a job to pass its checks (or fail them)


class JSON(JSONResponse):
    """JSON with NaN / inf as null (the standard has no NaN)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(plain(content), allow_nan=False, separators=(",", ":")).encode("utf-8")


def bad_request(err: BaseException) -> JSON:
    return JSON({"error": error_message(err)}, status_code=400)


async def body(request: Request) -> Any:
    """The JSON body ({} when empty). Only Content-Type application/json is read: a page of another
    site cannot send that without the browser asking first (CORS), which this app never allows."""
    raw = await request.body()
    if not raw:
        return {}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ValueError("send the request body as JSON, with Content-Type: application/json")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"the request body is not JSON: {err}") from None


def session_of(state: AppState, request: Request) -> str:
    return state.session(request.headers.get(SESSION_HEADER)).id


def make_routes(state: AppState, jobs: Jobs) -> list:
    def quick(fn: Callable[..., dict], with_state: bool = False):
        """A route that runs `fn(model, data)` with the session's edits applied, under the lock."""

        async def endpoint(request: Request) -> Response:
            try:
                data = await body(request)
                sid = session_of(state, request)

                def run() -> dict:
                    with state.computing(sid) as model:
                        return fn(state, model, data) if with_state else fn(model, data)

                return JSON(await run_in_threadpool(run))
            except BAD_INPUT as err:
                return bad_request(err)

        return endpoint

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    async def view_script(request: Request) -> Response:
        from interp.views import assets

        return Response(assets()[0], media_type="text/javascript")

    async def view_style(request: Request) -> Response:
        from interp.views import assets

        return Response(assets()[1], media_type="text/css")

    async def info(request: Request) -> Response:
        from analyses.common import ANSWER, CLEAN, CORRUPTED, COUNTERFACTUAL
        from interp.patching import SITES

        cfg = state.model.cfg
        return JSON({"model": state.name, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_mlp": cfg.d_mlp,
                     "d_vocab": cfg.d_vocab, "sites": [s for s in SITES if "feature" not in s],
                     "transcoders": bool(state.transcoders), "session": session_of(state, request),
                     "defaults": {"clean": CLEAN, "corrupted": CORRUPTED, "answer": ANSWER,
                                  "counterfactual": COUNTERFACTUAL, "subject": "Michael Jordan"}})

    async def submit(request: Request) -> Response:
        try:
            data = await body(request)
            sid = session_of(state, request)
            if not isinstance(data, dict) or set(data) - {"kind", "params"}:
                raise ValueError('a job is {"kind": ..., "params": {...}}')
            kind = data.get("kind")
            work = compute.job_work(state, kind, data.get("params", {}))
        except BAD_INPUT as err:
            return bad_request(err)
        def keep(value):  # an edit joins the session once computed
            edit, out = value
            return out | {"edit_index": state.add_edit(sid, edit), "edits": state.session(sid).describe()}

        job = jobs.submit(kind, sid, work, keep if kind == "edit" else None)
        # Bad input fails the job before its first progress step: answer 400 with its message then.
        await run_in_threadpool(job.first_step.wait, FIRST_STEP_WAIT_S)
        if job.status == "error" and not job.progressed:
            jobs.forget(job.id)
            return JSON({"error": job.error}, status_code=400)
        return JSON(job.snapshot(), status_code=202)

    async def job_status(request: Request) -> Response:
        try:
            return JSON(jobs.get(request.path_params["job_id"]).snapshot())
        except KeyError as err:
            return JSON({"error": error_message(err)}, status_code=404)

    async def cancel(request: Request) -> Response:
        try:
            return JSON(jobs.cancel(request.path_params["job_id"]).snapshot())
        except KeyError as err:
            return JSON({"error": error_message(err)}, status_code=404)

    async def edits(request: Request) -> Response:
        return JSON({"edits": state.session(request.headers.get(SESSION_HEADER)).describe()})

    async def compare(request: Request) -> Response:
        try:
            data = await body(request)
            sid = session_of(state, request)
            prompts = compute.Params(data, ["prompts"]).texts("prompts")

            def run() -> dict:
                with state.lock:
                    before = [compute.top_tokens(state.model, p, 5) for p in prompts]
                    with state.computing(sid) as model:
                        after = [compute.top_tokens(model, p, 5) for p in prompts]
                n = len(state.session(sid).edits)
                return {"views": [compute.comparison(prompts, before, after, f"without / with this tab's {n} edit(s)")],
                        "before": [b["top"] for b in before], "after": [a["top"] for a in after]}

            return JSON(await run_in_threadpool(run))
        except BAD_INPUT as err:
            return bad_request(err)

    async def revert(request: Request) -> Response:
        try:
            data = await body(request)
            sid = session_of(state, request)
            index = compute.Params(data, ["index"]).integer("index", None)
            n = await run_in_threadpool(state.revert_edits, sid, index)
            return JSON({"reverted": n, "edits": state.session(sid).describe()})
        except BAD_INPUT as err:
            return bad_request(err)

    return [
        Route("/", page),
        Route("/assets/views.js", view_script),
        Route("/assets/views.css", view_style),
        Route("/api/info", info),
        Route("/api/predict", quick(compute.predict), methods=["POST"]),
        Route("/api/attention", quick(compute.attention), methods=["POST"]),
        Route("/api/logit_lens", quick(compute.logit_lens_view), methods=["POST"]),
        Route("/api/dla", quick(compute.dla), methods=["POST"]),
        Route("/api/dashboard", quick(compute.dashboard, with_state=True), methods=["POST"]),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status, methods=["GET"]),
        Route("/api/jobs/{job_id}", cancel, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/api/edits", edits, methods=["GET"]),
        Route("/api/edits/compare", compare, methods=["POST"]),
        Route("/api/edits/revert", revert, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]


__all__ = ["make_routes", "CSP", "JSON"]
