"""The reviewer web UI in a real browser: headless Chromium (Playwright) against the real service on a loopback port.

The service serves the small SMS spam cascade of tests/serve/conftest.py on a SQLite file; real SMS messages go
through `POST /v1/moderate` with an API key until at least 50 items wait for review (flagged, plus a 10% audit
sample of deliveries), one of them a message full of markup. A reviewer then works the whole queue with the
keyboard, and the database is read directly to check what the clicks did. Screenshots (login, item, dashboard,
phone) go to test-artifacts/ui/ (or $FINESIEVE_ARTIFACTS/ui/). Skips without Playwright or Chromium unless
FINESIEVE_REQUIRE_BROWSER=1 (tests/serve/browser.py).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import httpx2 as httpx
import pytest
from browser import launch_chromium, live_server, screenshots_folder
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from finesieve.serve import accounts, store
from finesieve.serve.app import create_app
from finesieve.serve.db import AuditEntry, ReviewItem
from finesieve.serve.settings import ServiceSettings
from finesieve.serve.ui_routes import UI_DIR

MIN_QUEUE = 50
REVIEWER, ADMIN = ("rita", "rita's long passphrase"), ("adam", "adam's long passphrase")
XSS_ID = "xss-1"
# Flagged by the spam rules ("prize" blocks); if any of its markup ran, window.__pwned would be set.
XSS_TEXT = (
    "WIN a guaranteed prize! <script>window.__pwned = 'script'</script>"
    "<img src=x onerror=\"window.__pwned = 'img'\"> <b>bold?</b> claim now"
)
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 375, "height": 812}
WAIT_MS = 15_000  # longest a page may take to answer one key press or load (each takes milliseconds here)


@pytest.fixture(scope="module")
def chromium():
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def screenshots_dir():
    return screenshots_folder()


@dataclass
class ReviewService:
    base_url: str
    engine: Engine
    queued: int  # review items created by the moderation requests


@pytest.fixture(scope="module")
def review_service(tmp_path_factory, service_cascade_run, sms_unseen):
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('ui') / 'service.db'}",
        runs={"spam": service_cascade_run},
        audit_rate=0.1,
    )
    app = create_app(settings)
    engine = app.state.engine
    with Session(engine) as session, session.begin():
        key = store.create_api_key(session, "sms-gateway", ["spam"])
        accounts.create_user(session, *REVIEWER, "reviewer", actor="test")
        accounts.create_user(session, *ADMIN, "admin", actor="test")
    with live_server(app) as base_url:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            first = client.post("/v1/moderate", json={"messages": [{"id": XSS_ID, "text": XSS_TEXT}]})
            assert first.status_code == 200, first.text
            assert first.json()["results"][0]["action"] != "deliver", "the markup message must be queued"
            rows = sms_unseen.itertuples()
            while _queue_size(engine) < MIN_QUEUE:
                batch = [{"id": r.msg_id, "text": r.text} for _, r in zip(range(50), rows)]
                assert batch, f"ran out of SMS rows before {MIN_QUEUE} items were queued"
                answer = client.post("/v1/moderate", json={"messages": batch})
                assert answer.status_code == 200, answer.text
        yield ReviewService(base_url=base_url, engine=engine, queued=_queue_size(engine))


def _queue_size(engine: Engine) -> int:
    with Session(engine) as session:
        return store.count(session, ReviewItem)


def _items(engine: Engine) -> list[ReviewItem]:
    with Session(engine) as session:
        return list(session.scalars(select(ReviewItem).order_by(ReviewItem.id)))


def _audit(engine: Engine, action: str) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _login(page, base_url: str, user: tuple[str, str], next_path: str = "/ui/") -> None:
    page.goto(f"{base_url}{next_path}")
    page.wait_for_url(re.compile(r"/ui/login"), timeout=WAIT_MS)  # no session yet: the page sends us to log in
    page.fill("#username", user[0])
    page.fill("#password", user[1])
    page.click("#login-button")
    page.wait_for_url(f"{base_url}{next_path}", timeout=WAIT_MS)
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)


def _steps(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.steps || 0)"))


def _press(page, key: str) -> None:
    """Press `key` on the review page and wait until the request it started has finished."""
    before = _steps(page)
    page.keyboard.press(key)
    # A function, not an expression string: Playwright evals strings, which the pages' CSP forbids.
    page.wait_for_function("(before) => Number(document.body.dataset.steps || 0) > before", arg=before, timeout=WAIT_MS)


def _item_on_screen(page) -> tuple[int, str] | None:
    if page.get_attribute("body", "data-state") != "item":
        return None
    return int(page.get_attribute("#item", "data-item-id")), page.get_attribute("#item", "data-message-id")


def _no_horizontal_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url}: the page is {width}px wide at a {PHONE['width']}px viewport"


def _watch(page) -> list[str]:
    """Collect what must never happen on these pages: script errors, dialogs (alert from injected markup)."""
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))

    def console(msg):
        # Chromium logs every 4xx fetch; a 401 is how a page learns nobody is logged in (or a password was wrong).
        if msg.type == "error" and "status of 401" not in msg.text:
            problems.append(f"console {msg.type}: {msg.text}")

    page.on("console", console)

    def dialog(d):
        problems.append(f"dialog: {d.message}")
        d.dismiss()

    page.on("dialog", dialog)
    return problems


def _unlabelled(page) -> list[str]:
    """Visible form fields no label names (screen readers would announce them as just "edit text")."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll("input, textarea, select"))
            .filter((f) => f.offsetParent !== null && f.labels.length === 0 && !f.getAttribute("aria-label"))
            .map((f) => f.id || f.name || f.outerHTML.slice(0, 60))"""
    )


def _percent(text: str) -> float | None:
    return None if text == "–" else float(text.rstrip("%"))


def test_ui_files_are_local_and_served_with_a_strict_content_security_policy(review_service):
    client = httpx.Client(base_url=review_service.base_url, timeout=30)
    for path in ("/ui/login", "/ui/", "/ui/dashboard"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, csp
        assert page.headers["cache-control"] == "no-store"
        for asset in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text):
            served = client.get(asset)
            assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff", asset
    assert client.get("/ui/static/review.js").headers["content-type"].startswith("text/javascript")
    # Only the UI's own CSS and JS by bare name: no Python source, no path out of the folder.
    for refused in ("/ui/static/ui_routes.py", "/ui/static/..%2Fui_routes.py", "/ui/static/..%2F..%2Fdb.py"):
        assert client.get(refused).status_code == 404, refused
    client.close()
    for file in UI_DIR.iterdir():
        source = file.read_text(encoding="utf-8")
        # Nothing fetched from elsewhere (the SVG namespace is a name, not a download); no HTML parsing of data.
        assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", source), f"{file.name} links off the machine"
        assert not re.findall(r"\.(?:inner|outer)HTML\s*[+]?=|insertAdjacentHTML\(|document\.write", source), (
            f"{file.name} parses data as HTML"
        )
        assert "<script>" not in source, f"{file.name} has inline script (the CSP would block it)"


def test_login_page_shows_a_wrong_password_and_then_logs_in(chromium, review_service, screenshots_dir):
    context = chromium.new_context(viewport=DESKTOP)
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{review_service.base_url}/ui/dashboard")
    page.wait_for_url(re.compile(r"/ui/login\?next=%2Fui%2Fdashboard"), timeout=WAIT_MS)
    assert _unlabelled(page) == []
    page.fill("#username", ADMIN[0])
    page.fill("#password", "not the password")
    page.click("#login-button")
    page.wait_for_selector("#status.error", timeout=WAIT_MS)
    assert page.text_content("#status") == "Wrong username or password."
    assert page.get_attribute("#status", "aria-live") == "polite"
    assert page.input_value("#password") == "", "a wrong password is cleared"
    page.screenshot(path=str(screenshots_dir / "login.png"))
    page.fill("#password", ADMIN[1])
    page.click("#login-button")
    page.wait_for_url(f"{review_service.base_url}/ui/dashboard", timeout=WAIT_MS)  # back where the admin was headed
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    assert page.text_content("#who") == "adam (admin)"
    assert context.cookies()[0]["httpOnly"], "the session cookie must be out of reach of scripts"
    assert page.evaluate("document.cookie") == ""
    page.click("#logout")
    page.wait_for_url(re.compile(r"/ui/login$"), timeout=WAIT_MS)
    page.goto(f"{review_service.base_url}/ui/")
    page.wait_for_url(re.compile(r"/ui/login\?next="), timeout=WAIT_MS)  # logged out: the queue needs a login again
    context.close()
    assert problems == []


def test_a_reviewer_cannot_use_admin_routes_and_every_post_needs_the_csrf_token(chromium, review_service):
    base = review_service.base_url
    reviewer, admin = chromium.new_context(), chromium.new_context()
    try:
        session = reviewer.request.post(
            f"{base}/v1/auth/login", data={"username": REVIEWER[0], "password": REVIEWER[1]}
        )
        assert session.status == 200
        csrf = {"X-CSRF-Token": session.json()["csrf_token"]}
        assert reviewer.request.get(f"{base}/v1/admin/audit").status == 403
        new_user = {"username": "mallory", "password": "a long enough password", "role": "admin"}
        assert reviewer.request.post(f"{base}/v1/admin/users", data=new_user, headers=csrf).status == 403
        assert reviewer.request.post(f"{base}/v1/review/next").status == 403  # the cookie alone is not enough
        with Session(review_service.engine) as db:
            assert accounts.verify(db, "mallory", new_user["password"]) is None
        logged = admin.request.post(f"{base}/v1/auth/login", data={"username": ADMIN[0], "password": ADMIN[1]})
        assert logged.status == 200
        assert admin.request.get(f"{base}/v1/admin/audit").status == 200
    finally:
        reviewer.close()
        admin.close()


def test_a_reviewer_works_the_whole_queue_with_the_keyboard(chromium, review_service, screenshots_dir):
    base, engine = review_service.base_url, review_service.engine
    assert review_service.queued >= MIN_QUEUE

    # At a phone's width: one item and the dashboard fit without horizontal scrolling; buttons are tappable.
    phone = chromium.new_context(viewport=PHONE, device_scale_factor=2, has_touch=True)
    page = phone.new_page()
    problems = _watch(page)
    _login(page, base, REVIEWER)
    page.click("#take")
    page.wait_for_selector("body[data-state=item]", timeout=WAIT_MS)
    _no_horizontal_scroll(page)
    assert _unlabelled(page) == []
    for button in ("#btn-violation", "#btn-ok", "#btn-skip", "#btn-undo"):
        box = page.locator(button).bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44, f"{button} is too small to tap: {box}"
    page.screenshot(path=str(screenshots_dir / "phone-item.png"), full_page=True)
    page.goto(f"{base}/ui/dashboard")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    _no_horizontal_scroll(page)
    page.screenshot(path=str(screenshots_dir / "phone-dashboard.png"), full_page=True)
    phone.close()  # the item it took stays leased to the reviewer, who gets it back below

    desktop = chromium.new_context(viewport=DESKTOP)
    page = desktop.new_page()
    problems += _watch(page)
    _login(page, base, REVIEWER)
    _press(page, "t")
    page.screenshot(path=str(screenshots_dir / "item.png"), full_page=True)
    page.keyboard.press("?")  # help opens and closes from the keyboard (no request: nothing to wait for)
    assert page.locator("#help").is_visible()
    page.keyboard.press("?")
    assert not page.locator("#help").is_visible()

    decided: dict[int, bool] = {}  # item id -> the reviewer's final verdict
    skipped = undone = noted = None
    xss_seen = False
    for turn in range(10 * review_service.queued):  # bounded: each turn decides or skips one item
        on_screen = _item_on_screen(page)
        if on_screen is None:
            break
        item_id, message_id = on_screen
        if message_id == XSS_ID:
            xss_seen = True
            shown = page.text_content("#message-text")
            assert "<script>" in shown and "onerror=" in shown, f"the markup must show as text: {shown!r}"
            assert page.locator("#message-text *").count() == 0, "markup in a message became elements"
        if skipped is None and turn == 3:
            _press(page, "s")
            skipped = item_id
            continue
        if noted is None and turn == 7:
            page.click("#note")
            page.keyboard.type("vague; v and n typed here are text, not decisions")
            page.keyboard.press("Escape")  # leaves the note field; keys decide again
            noted = item_id
        violation = turn % 3 != 2
        if violation:
            page.keyboard.press("1")  # the first category (the cascade's only positive class: spam)
        _press(page, "v" if violation else "n")
        decided[item_id] = violation
        if undone is None and turn >= 10:
            _press(page, "u")
            assert _item_on_screen(page) == on_screen, "undo brings the decided item back"
            _press(page, "n" if violation else "v")
            decided[item_id] = not violation
            undone = item_id
    assert _item_on_screen(page) is None and "queue is empty" in page.text_content("#idle-text")
    assert xss_seen and page.evaluate("window.__pwned") is None, "markup in a message ran"
    assert skipped is not None and undone is not None and noted is not None

    # The database: every item decided by the reviewer, as pressed; the undone one as re-decided.
    items = _items(engine)
    assert len(items) == review_service.queued == len(decided)
    for item in items:
        assert item.state == "decided" and item.reviewer == REVIEWER[0] and item.decided_at is not None, item.id
        assert item.violation is decided[item.id], (
            f"item {item.id}: stored {item.violation}, pressed {decided[item.id]}"
        )
        assert item.decided_category == ("spam" if item.violation else None), item.id
    notes = {item.id: item.note for item in items if item.note}
    assert notes == {noted: "vague; v and n typed here are text, not decisions"}
    decide_counts = Counter(e.details["item_id"] for e in _audit(engine, "review_decide"))
    assert decide_counts[undone] == 2 and sum(decide_counts.values()) == len(items) + 1
    assert [e.details["item_id"] for e in _audit(engine, "review_undo")] == [undone]
    assert skipped in [e.details["item_id"] for e in _audit(engine, "review_release")]
    assert {e.actor for e in _audit(engine, "review_decide")} == {REVIEWER[0]}

    # The dashboard agrees with the database.
    page.click("a[href='/ui/dashboard']")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.screenshot(path=str(screenshots_dir / "dashboard.png"), full_page=True)
    flagged = [i for i in items if i.reason == "flagged"]
    audited = [i for i in items if i.reason == "audit"]
    assert flagged and audited, "the queue should hold both flagged and audit items"
    expected = {
        "#stat-pending": "0",
        "#stat-leased": "0",
        "#stat-decided": str(len(items)),
        "#stat-last-hour": str(len(items)),
        "#stat-oldest": "none",
    }
    assert {sel: page.text_content(sel) for sel in expected} == expected
    precision = 100 * sum(i.violation for i in flagged) / len(flagged)
    audit_rate = 100 * sum(i.violation for i in audited) / len(audited)
    for selector, value in (
        ("#stat-precision", precision),
        ("#stat-overturn", 100 - precision),
        ("#stat-audit-rate", audit_rate),
    ):
        shown = _percent(page.text_content(selector))
        assert shown is not None and abs(shown - value) <= 0.05 + 1e-9, f"{selector}: {shown} != {value:.3f}"
    bars = page.locator("#chart svg rect.bar")
    assert bars.count() == 24
    assert sum(int(bars.nth(i).get_attribute("data-decisions")) for i in range(24)) == len(items)
    desktop.close()
    assert problems == []
