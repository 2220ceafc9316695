"""Fuzz the moderation API from its own OpenAPI document (schemathesis, in-process over ASGI, with a valid key).

Every operation of the health, moderation and messages routers gets generated requests, valid and invalid, and
each answer must be no 5xx, conform to the response schema the document declares for its status, and carry a
declared content type. Bounded: a fixed number of examples per operation, derandomized so a failure reproduces.
Run alone: `OMP_NUM_THREADS=1 pytest -q tests/serve/test_openapi_fuzz.py`.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from sqlalchemy.orm import Session

from finesieve.serve import store
from finesieve.serve.app import create_app
from finesieve.serve.settings import ServiceSettings

EXAMPLES_PER_OPERATION = 30
FUZZED_TAGS = ["health", "moderation", "messages"]  # the public API; the review UI is not in the document


@pytest.fixture(scope="module")
def fuzzed_service(service_cascade_run, service_tfidf_run, tmp_path_factory):
    """The app on a fresh SQLite database, with one key for every model, started (lifespan) for the module."""
    from fastapi.testclient import TestClient

    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    app = create_app(
        ServiceSettings(
            database_url=f"sqlite:///{db}",
            runs={"spam": service_cascade_run, "tfidf": service_tfidf_run},
            max_batch=16,
            max_text_chars=2_000,
        )
    )
    with Session(app.state.engine) as session, session.begin():
        key = store.create_api_key(session, "fuzz", ["*"])
    with TestClient(app):  # runs the lifespan, as a real server would
        yield app, key


def operations(app, key: str) -> list:
    """The fuzzed operations of the app's OpenAPI document (schemathesis's pytest plugin does not load under
    pytest 9, so each operation is driven by hypothesis directly). The document itself needs a key."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {key}"})
    schema = schema.include(tag=FUZZED_TAGS)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_answers_match_the_schema(fuzzed_service, mode):
    app, key = fuzzed_service
    found = operations(app, key)
    assert {op.path for op in found} >= {"/v1/moderate", "/v1/moderations", "/v1/messages/{message_id}", "/healthz"}
    for operation in found:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {key}"},
                checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
            )

        try:
            call()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            # an operation without parameters or body (GET /healthz) has no invalid request to generate
