"""The reviewer's web UI: three static pages (login, review queue, dashboard) and their CSS and JS, under /ui.

    from finesieve.serve.ui_routes import ui_router
    app.include_router(ui_router)      # create_app does this; then open http://127.0.0.1:8000/ui/

The pages are plain files in `serve/ui/` (no build step, nothing fetched from a CDN). They hold no data: their
scripts call the review JSON API (`/v1/auth/*`, `/v1/review/*`) with the session cookie, which is HttpOnly, and
send the `X-CSRF-Token` that login and `GET /v1/auth/me` return on every POST. So serving the pages needs no
session; the API refuses anything the caller may not do.

Every answer carries a strict Content-Security-Policy (scripts and styles from this origin only, no inline
script): message texts are attacker-controlled, and the scripts insert them with `textContent`, so markup in a
message shows as text; the policy is the second wall should a future edit forget that.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

UI_DIR = Path(__file__).resolve().parent / "ui"
PAGES = {"login": "login.html", "review": "review.html", "dashboard": "dashboard.html"}
MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

ui_router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)


def _file(name: str, media_type: str, *, cache: str) -> FileResponse:
    return FileResponse(UI_DIR / name, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": cache})


def _page(name: str) -> FileResponse:
    # no-store: a page left in the cache after logout would show the reviewer's last screen to the next person
    return _file(PAGES[name], "text/html; charset=utf-8", cache="no-store")


@ui_router.get("")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@ui_router.get("/")
def review_page() -> FileResponse:
    return _page("review")


@ui_router.get("/login")
def login_page() -> FileResponse:
    return _page("login")


@ui_router.get("/dashboard")
def dashboard_page() -> FileResponse:
    return _page("dashboard")


@ui_router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """A CSS or JS file of `serve/ui/`, by bare name only: anything with a path separator is refused (404)."""
    path = UI_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if media_type is None or "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise HTTPException(404, f"no UI file named {name!r}")
    return _file(name, media_type, cache="no-cache")
