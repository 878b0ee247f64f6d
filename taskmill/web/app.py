"""``dashboard_app``: the dashboard as an ASGI application (Starlette).

It talks to the scheduler like any other client, through an ``AsyncClient`` over the bus, made
when the application starts (on the loop that serves it) and closed when it stops. Routes:

* ``GET /`` the page, ``GET /static/...`` its script and style (package data, no build step);
* ``GET /api/state`` the scheduler's state; ``GET /api/events`` the live feed (server-sent
  events, see ``LiveFeed``);
* ``GET /api/history?status=&type=&limit=&offset=`` finished tasks, newest first;
* ``GET /api/tasks/{id}`` one task: its active row, its newest history row, its active
  children, previews of its payload and result;
* ``POST /api/tasks/{id}/cancel``, ``POST /api/pause``, ``POST /api/resume``,
  ``POST /api/dead-letters/{history_id}/retry``, ``POST /api/groups/pause`` and
  ``POST /api/groups/resume`` (``{"group": name}``; a 404 while the client has no group pause).

Bad input is a 400 with a one-line reason; a refusal of the scheduler's (``InvalidRequest``)
a 409; an actor that does not answer a 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from importlib.resources import files
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bus.errors import ActorUnavailable, InvalidRequest
from taskmill.client import AsyncClient
from taskmill.records import HistoryStatus
from taskmill.web.access import TokenGate
from taskmill.web.feed import LiveFeed, group_controls
from taskmill.web.views import history_view, preview, task_view

__all__ = ["dashboard_app"]

MAX_HISTORY = 500


def _feed(request: Request) -> LiveFeed:
    feed: LiveFeed = request.app.state.feed
    return feed


def _int(request: Request, name: str, default: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= high:
        raise HTTPException(400, f"{name} must be an integer in 0..{high}, not {text!r}")
    return value


def _path_id(request: Request, name: str) -> int:
    text = request.path_params[name]
    if not text.isdigit():
        raise HTTPException(400, f"{name} must be a task id (digits), not {text!r}")
    return int(text)


async def index(request: Request) -> Response:
    page = files("taskmill.web").joinpath("static", "index.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


async def state(request: Request) -> Response:
    return JSONResponse(await _feed(request).state())


async def events(request: Request) -> Response:
    feed = _feed(request)

    async def stream() -> AsyncIterator[str]:
        async with feed.listen() as queue:
            yield ": live\n\n"  # the headers go out now, not with the first state
            while message := await queue.get():
                yield message

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def history(request: Request) -> Response:
    status = request.query_params.get("status") or None
    if status is not None and status not in {s.value for s in HistoryStatus}:
        known = ", ".join(s.value for s in HistoryStatus)
        raise HTTPException(400, f"unknown status {status!r}; one of {known}")
    task_type = request.query_params.get("type") or None
    limit = _int(request, "limit", 50, MAX_HISTORY)
    offset = _int(request, "offset", 0, 10**9)
    rows = (
        await _feed(request)
        .client.store()
        .history(limit, offset, task_type=task_type, status=status)
    )
    return JSONResponse({"rows": [history_view(r) for r in rows]})


async def task_detail(request: Request) -> Response:
    task_id = _path_id(request, "task_id")
    store = _feed(request).client.store()
    active = await store.task_by_id(task_id)
    past = await store.result(task_id)
    if active is None and past is None:
        raise HTTPException(404, f"no task #{task_id}")
    children = await store.children(task_id)
    payload = (active.payload if active is not None else None) or (
        past.payload if past is not None else None
    )
    return JSONResponse(
        {
            "id": task_id,
            "active": None if active is None else task_view(active),
            "history": None if past is None else history_view(past),
            "children": [task_view(c) for c in children],
            "payload": preview(payload),
            "result": None if past is None else preview(past.result),
        }
    )


async def cancel(request: Request) -> Response:
    feed = _feed(request)
    cancelled = await feed.client.cancel(_path_id(request, "task_id"))
    feed.refresh()
    return JSONResponse({"cancelled": cancelled})


async def pause(request: Request) -> Response:
    feed = _feed(request)
    await feed.client.pause_all()
    feed.refresh()
    return JSONResponse({"paused": True})


async def resume(request: Request) -> Response:
    feed = _feed(request)
    await feed.client.resume_all()
    feed.refresh()
    return JSONResponse({"paused": False})


async def retry_dead_letter(request: Request) -> Response:
    feed = _feed(request)
    outcome = await feed.client.retry_dead_letter(_path_id(request, "history_id"))
    feed.refresh()
    return JSONResponse(outcome.to_dict())


async def _group_name(request: Request) -> str:
    if not group_controls(_feed(request).client):
        raise HTTPException(404, "this scheduler has no group pause")
    try:
        body = await request.json()
    except ValueError:
        body = None
    group = body.get("group") if isinstance(body, dict) else None
    if not isinstance(group, str) or not group:
        raise HTTPException(400, 'the body must be {"group": "<name>"}')
    return group


async def pause_group(request: Request) -> Response:
    return await _group_action(request, pause=True)


async def resume_group(request: Request) -> Response:
    return await _group_action(request, pause=False)


async def _group_action(request: Request, *, pause: bool) -> Response:
    feed = _feed(request)
    group = await _group_name(request)
    client: Any = feed.client  # pause_group/resume_group: checked by _group_name
    await (client.pause_group(group) if pause else client.resume_group(group))
    feed.refresh()
    return JSONResponse({"group": group, "paused": pause})


async def _refused(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 409)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"the scheduler did not answer: {exc}"}, 503)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code)


def dashboard_app(
    client_factory: Callable[[], AsyncClient], *, token: str | None = None
) -> Starlette:
    """The dashboard application. ``client_factory`` makes its client once the application
    starts, on the loop that serves it; ``token`` guards every request (see ``access``)."""
    routes: list[Any] = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/events", events),
        Route("/api/history", history),
        Route("/api/tasks/{task_id}", task_detail),
        Route("/api/tasks/{task_id}/cancel", cancel, methods=["POST"]),
        Route("/api/pause", pause, methods=["POST"]),
        Route("/api/resume", resume, methods=["POST"]),
        Route("/api/dead-letters/{history_id}/retry", retry_dead_letter, methods=["POST"]),
        Route("/api/groups/pause", pause_group, methods=["POST"]),
        Route("/api/groups/resume", resume_group, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("taskmill.web", "static")])),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = client_factory()
        app.state.feed = LiveFeed(client)
        try:
            yield
        finally:
            await app.state.feed.close()
            await client.close()

    return Starlette(
        routes=routes,
        middleware=[Middleware(TokenGate, token=token)],
        exception_handlers={
            InvalidRequest: _refused,
            ActorUnavailable: _unavailable,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
