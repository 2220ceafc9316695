"""The review API through HTTP (the real app, real runs, SQLite and PostgreSQL): login, CSRF, roles, the queue's
routes in the JSON shapes the reviewer UI relies on, and the rate limits on API keys and failed logins."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from finesieve.serve import accounts, store
from finesieve.serve.app import create_app
from finesieve.serve.review_routes import CSRF_HEADER, SESSION_COOKIE
from finesieve.serve.settings import ServiceSettings

PASSWORD = "correct horse battery"
PHONE = "07781 482 378"
ITEM_KEYS = {
    "item_id", "message_id", "reason", "priority", "state", "lease_owner", "lease_expires_at", "created_at", "age_s",
    "violation", "decided_category", "note", "reviewer", "decided_at", "message", "categories",
}  # fmt: skip
MESSAGE_KEYS = {
    "text", "action", "category", "score", "category_scores", "stage_scores", "decided_by", "rules_fired", "model",
    "model_version", "failure",
}  # fmt: skip
STATS_KEYS = {
    "pending", "leased", "decided", "by_reason", "oldest_pending_age_s", "decisions_last_hour", "decisions_per_hour",
    "queue_precision", "overturn_rate", "audit_violation_rate", "mean_seconds_to_decision",
}  # fmt: skip
SPAM = [
    f"WINNER! You have won a guaranteed prize, call {PHONE} to claim now",
    "URGENT! Your mobile number has won a cash prize of 2000 pounds, text CLAIM to 80086 now",
    "FREE entry into our weekly competition to win FA Cup final tickets, text WIN to 87121",
]


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """argon2id with small costs: the same algorithm and checks, without 64 MiB and 3 passes per login."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def service(db_url, service_cascade_run):
    """A started service with users ana (reviewer), ben (reviewer), root (admin) and an API key; yields (client, key)."""
    settings = ServiceSettings(database_url=db_url, runs={"spam": service_cascade_run}, audit_rate=0.0)
    app = create_app(settings)
    with Session(app.state.engine) as session, session.begin():
        key = store.create_api_key(session, "app", ["*"])
        for name, role in [("ana", "reviewer"), ("ben", "reviewer"), ("root", "admin")]:
            accounts.create_user(session, name, PASSWORD, role, actor="test")
    with TestClient(app) as client:
        yield client, key


class Person:
    """One logged-in browser on the shared test client: sends its own cookie and CSRF token on every call."""

    def __init__(self, client: TestClient, username: str):
        self.client = client
        response = client.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.text
        self.csrf = response.json()["csrf_token"]
        self.token = response.cookies[SESSION_COOKIE]
        client.cookies.clear()  # each Person sends its own cookie below

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers={"Cookie": f"{SESSION_COOKIE}={self.token}"}, **kwargs)

    def post(self, path: str, *, csrf: bool = True, **kwargs):
        headers = {"Cookie": f"{SESSION_COOKIE}={self.token}"} | ({CSRF_HEADER: self.csrf} if csrf else {})
        return self.client.post(path, headers=headers, **kwargs)


def moderate(client: TestClient, key: str, texts: list[str]) -> list[dict]:
    body = {"model": "spam", "messages": [{"id": f"m{i}", "text": t} for i, t in enumerate(texts)]}
    response = client.post("/v1/moderate", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_login_sets_a_strict_http_only_cookie_and_logout_ends_the_session(service):
    client, _ = service
    bad = client.post("/v1/auth/login", json={"username": "ana", "password": "not her password"})
    assert bad.status_code == 401 and "wrong username or password" in bad.json()["detail"]
    response = client.post("/v1/auth/login", json={"username": "ana", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"username", "role", "csrf_token"} and body["role"] == "reviewer"
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "httponly" in cookie
    assert "samesite=strict" in cookie and "path=/" in cookie
    ana = Person(client, "ana")
    assert ana.get("/v1/auth/me").json() == {"username": "ana", "role": "reviewer", "csrf_token": ana.csrf}
    refused = ana.post("/v1/auth/logout", csrf=False)
    assert refused.status_code == 403 and CSRF_HEADER in refused.json()["detail"]
    out = ana.post("/v1/auth/logout")
    assert out.status_code == 204 and SESSION_COOKIE in out.headers["set-cookie"]
    assert ana.get("/v1/auth/me").status_code == 401
    assert client.get("/v1/auth/me").status_code == 401


def test_a_reviewer_takes_decides_undoes_and_releases_items_in_the_contract_shape(service):
    client, key = service
    results = moderate(client, key, SPAM)
    assert all(r["action"] != "deliver" for r in results)  # every one is queued as flagged
    ana, ben = Person(client, "ana"), Person(client, "ben")

    taken = ana.post("/v1/review/next")
    assert taken.status_code == 200
    item = taken.json()["item"]
    assert set(item) == ITEM_KEYS and set(item["message"]) == MESSAGE_KEYS
    assert (item["state"], item["lease_owner"], item["reason"], item["categories"]) == (
        "leased",
        "ana",
        "flagged",
        ["spam"],
    )
    assert ana.post("/v1/review/next").json()["item"]["item_id"] == item["item_id"]  # a reload: the same item
    texts = {r["id"]: t for r, t in zip(results, SPAM)}
    assert item["message"]["text"] is not None and PHONE not in item["message"]["text"]  # only the redacted text
    assert item["message_id"] in texts and item["message"]["model"] == "spam"

    other = ben.post("/v1/review/next").json()["item"]
    assert other["item_id"] != item["item_id"]
    path = f"/v1/review/items/{item['item_id']}"
    stolen = ben.post(f"{path}/decision", json={"violation": False, "category": None, "note": None})
    assert stolen.status_code == 409 and "another reviewer" in stolen.json()["detail"]
    assert ben.post("/v1/review/items/999999/decision", json={"violation": True}).status_code == 404
    assert ana.post(f"{path}/decision", json={"violation": True}, csrf=False).status_code == 403
    wrong = ana.post(f"{path}/decision", json={"violation": True, "category": "phishing"})
    assert wrong.status_code == 422 and "['spam']" in wrong.json()["detail"]

    decided = ana.post(f"{path}/decision", json={"violation": True, "category": "spam", "note": "prize scam"})
    assert decided.status_code == 200
    d = decided.json()["item"]
    assert (d["state"], d["violation"], d["decided_category"], d["reviewer"], d["note"]) == (
        "decided",
        True,
        "spam",
        "ana",
        "prize scam",
    )
    assert d["decided_at"] is not None and d["lease_owner"] is None
    assert ana.post(f"{path}/decision", json={"violation": False}).status_code == 409  # decided already
    assert ben.post(f"{path}/undo").status_code == 409  # not ben's decision
    undone = ana.post(f"{path}/undo")
    assert undone.status_code == 200
    assert (undone.json()["item"]["state"], undone.json()["item"]["lease_owner"]) == ("leased", "ana")
    assert ana.post(f"{path}/decision", json={"violation": False}).status_code == 200

    released = ben.post(f"/v1/review/items/{other['item_id']}/release")
    assert released.status_code == 200 and released.json()["item"]["state"] == "pending"
    assert ben.post(f"/v1/review/items/{other['item_id']}/release").status_code == 409  # not held any more

    stats = ana.get("/v1/review/stats").json()
    assert set(stats) == STATS_KEYS
    assert (stats["pending"], stats["leased"], stats["decided"]) == (2, 0, 1)
    assert stats["queue_precision"] == 0.0 and stats["overturn_rate"] == 1.0  # ana overturned the model
    assert stats["audit_violation_rate"] is None and len(stats["decisions_per_hour"]) == 24
    while (response := ben.post("/v1/review/next")).status_code == 200:
        ben.post(f"/v1/review/items/{response.json()['item']['item_id']}/decision", json={"violation": True})
    assert response.status_code == 204 and response.content == b""
    assert ana.get("/v1/review/stats").json()["decided"] == 3


def test_roles_keys_and_sessions_each_open_only_their_own_routes(service):
    client, key = service
    bearer = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/review/next", headers=bearer).status_code == 401
    assert "API keys call /v1/moderate" in client.get("/v1/review/stats", headers=bearer).json()["detail"]
    ana, root = Person(client, "ana"), Person(client, "root")
    assert ana.post("/v1/moderate", json={"text": "hello"}).status_code == 401  # a session is not a key
    new = {"username": "cy", "password": PASSWORD, "role": "reviewer"}
    assert ana.post("/v1/admin/users", json=new).status_code == 403
    assert ana.get("/v1/admin/audit").status_code == 403
    assert root.post("/v1/admin/users", json=new, csrf=False).status_code == 403
    created = root.post("/v1/admin/users", json=new)
    assert created.status_code == 201 and created.json() == {"username": "cy", "role": "reviewer"}
    assert root.post("/v1/admin/users", json=new).status_code == 409
    short = root.post("/v1/admin/users", json={**new, "username": "dee", "password": "short"})
    assert short.status_code == 422 and "at least 10" in short.json()["detail"]
    assert Person(client, "cy").get("/v1/auth/me").json()["role"] == "reviewer"
    entries = root.get("/v1/admin/audit", params={"limit": 50}).json()["entries"]
    actions = [(e["actor"], e["action"]) for e in entries]
    assert ("root", "create_user") in actions and ("ana", "login") in actions and ("cy", "login") in actions
    assert entries[0]["id"] > entries[-1]["id"]  # newest first


def test_nothing_but_health_login_and_the_ui_pages_answers_without_credentials(service):
    client, _ = service
    open_paths = {"/healthz", "/v1/auth/login"}
    checked = []
    for template, operations in client.app.openapi()["paths"].items():  # every API route (the UI's are not in it)
        if template in open_paths:
            continue
        path = template.replace("{item_id}", "1").replace("{message_id}", "m1")
        for method in operations:
            response = client.request(method.upper(), path)
            assert response.status_code == 401, (method, path, response.status_code)
            checked.append(template)
    assert {"/v1/review/next", "/v1/admin/users", "/v1/moderate", "/metrics"} <= set(checked)
    assert client.get("/healthz").status_code == 200


def test_an_api_key_over_its_rate_gets_429_naming_it(db_url, service_cascade_run):
    settings = ServiceSettings(
        database_url=db_url, runs={"spam": service_cascade_run}, rate_limit_per_s=0.001, rate_limit_burst=2
    )
    app = create_app(settings)
    with Session(app.state.engine) as session, session.begin():
        key = store.create_api_key(session, "billing-app", ["*"])
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        codes = [client.post("/v1/moderate", json={"text": "hi there"}, headers=headers).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        refused = client.post("/v1/moderate", json={"text": "hi there"}, headers=headers)
        assert refused.status_code == 429 and "'billing-app'" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1


def test_five_failed_logins_a_minute_lock_the_name_even_with_the_right_password(service):
    client, _ = service
    for _ in range(5):
        assert client.post("/v1/auth/login", json={"username": "ana", "password": "guess guess"}).status_code == 401
    locked = client.post("/v1/auth/login", json={"username": "ana", "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert "too many failed logins for 'ana'" in locked.json()["detail"]
    # the test client is one address, so it is locked out for every name now
    assert client.post("/v1/auth/login", json={"username": "ben", "password": PASSWORD}).status_code == 429
