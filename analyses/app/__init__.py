"""`interp serve`: the local explorer app (Starlette), one page over one model.

    from analyses.app import create_app
    app = create_app(model)              # a Starlette app; `uvicorn.run(app, host="127.0.0.1")`

Modules: `state` (the model, its lock, per-tab edit sessions), `jobs` (background work with
progress and cancel), `compute` (what each request computes, with the package's functions),
`views` (results as view payloads), `routes` (the HTTP API); `static/` holds the page.
"""

from __future__ import annotations

from typing import Any, Optional

from analyses.app.jobs import Jobs
from analyses.app.state import AppState


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def create_app(model: Any, *, name: Optional[str] = None, texts: Optional[list[str]] = None,
               transcoders: Any = "auto", allowed_hosts: Optional[list[str]] = None) -> Any:
    """The explorer for `model` (a `models.Transformer`, or a name `models.load` takes).

    texts: prompts the neuron and feature dashboards read (default: the fact world's prompts
    for the fact-world model, none else). transcoders: per-layer dictionaries for feature
    dashboards, a folder or "factworld"; "auto": the shipped ones for the fact-world model.
    allowed_hosts: the Host names the app answers (others get 400: no DNS rebinding onto a
    loopback server); None: any (`interp serve` passes LOOPBACK_HOSTS when bound to loopback)."""
    from starlette.applications import Starlette

    from analyses.app.routes import make_routes
    from analyses.common import as_model

    label = name or (model if isinstance(model, str) else type(model).__name__)
    is_factworld = (model == "factworld") if isinstance(model, str) else getattr(model, "default_corpus", None) is not None
    model = as_model(model)
    if texts is None and is_factworld:
        from analyses.features import corpus

        texts = corpus(limit=20)
    if transcoders == "auto":
        transcoders = "factworld" if is_factworld else None
    if isinstance(transcoders, str):
        from probes.sae import load_transcoders

        try:
            transcoders = load_transcoders(transcoders)
        except (FileNotFoundError, ValueError):
            transcoders = None
    state = AppState(model, name=label, texts=texts, transcoders=transcoders)
    jobs = Jobs(state)
    from starlette.middleware import Middleware

    from analyses.app.guard import SameOriginOnly

    middleware = [Middleware(SameOriginOnly)]
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=make_routes(state, jobs), middleware=middleware)
    app.state.interp = state
    app.state.jobs = jobs
    return app


__all__ = ["create_app", "AppState", "Jobs", "LOOPBACK_HOSTS"]
