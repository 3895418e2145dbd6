"""The dashboard: one static page (HTML + vanilla JS + CSS) that reads the public JSON API.

Served at `/dashboard`; its assets at `/dashboard/static/...`. The page itself
holds no data and needs no credentials: it calls the `/api/...` routes from the
browser and, when they answer 401, asks for an API key (kept in sessionStorage,
sent as `Authorization: Bearer <key>`).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


async def dashboard_page(_request: Request) -> Response:
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html; charset=utf-8")


DASHBOARD_ROUTES = [
    Route("/dashboard", dashboard_page, methods=["GET"]),
    Mount("/dashboard/static", app=StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
]
