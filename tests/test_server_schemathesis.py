"""Schemathesis against the server's published OpenAPI schema: no generated request gets a 5xx.

Every operation is fuzzed in process (ASGI) with data that fits its schema and data that does
not. A session is opened first and its id and key are sent with the generated requests, so
the fuzzer reaches the session logic (clicks, boxes, object ids, regions, saves) instead of
stopping at 403/404. The number of examples per operation is kept small enough for CI on two
cores; the test reports how many requests it sent.
"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.server import ServerConfig, create_app
from server_fixtures import tiny_checkpoint

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

EXAMPLES = 40  # per operation and generation mode


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "data"
    (root / "case1").mkdir(parents=True)
    shutil.copy(SAMPLE_CT, root / "case1" / "ct.nii.gz")
    config = ServerConfig(
        model="sam-med3d-tiny",
        checkpoint=tiny_checkpoint(base / "tiny.pth"),
        data_root=root,
        allowed_hosts=("testserver",),  # schemathesis's in-process client sends Host: testserver
        max_image_bytes=8 * 2**20,
        memory_budget_bytes=256 * 2**20,
    )
    app = create_app(config)
    return app, schemathesis.openapi.from_asgi("/openapi.json", app)


def open_session(schema) -> dict[str, str]:
    """A session on the sample CT with one object, through the same in-process client."""
    from schemathesis.python import asgi

    with asgi.get_client(schema.app) as client:
        opened = client.post("http://testserver/api/sessions", data={"path": "case1/ct.nii.gz"})
        assert opened.status_code == 201, opened.text
        body = opened.json()
        key = body["session_key"]
        clicked = client.post(
            f"http://testserver/api/sessions/{body['session_id']}/points",
            json={"position": list(SAMPLE_CT_LIVER_VOXEL)},
            headers={"X-Session-Key": key},
        )
        assert clicked.status_code == 200, clicked.text
    return {"session_id": body["session_id"], "key": key}


def test_no_generated_request_gets_a_server_error(served, record_property):
    app, schema = served
    session = open_session(schema)
    statuses: Counter[int] = Counter()
    sent = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        templated = "{session_id}" in operation.path
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(
                mode,
                path_parameters={"session_id": session["session_id"]} if templated else None,
                headers={"X-Session-Key": session["key"]} if templated else None,
            )

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def fuzz(case) -> None:
                nonlocal sent, session
                response = case.call()
                sent += 1
                statuses[response.status_code] += 1
                case.validate_response(response, checks=[not_a_server_error])
                if operation.method.upper() == "DELETE" and response.status_code < 300:
                    session.update(open_session(schema))  # the fuzzer closed our session: open another

            try:
                fuzz()
            except Unsatisfiable:
                continue  # a negative mode with nothing to break (no parameters)
    record_property("schemathesis_cases", sent)
    print(f"schemathesis: {sent} requests over {len(operations)} operations; statuses {dict(sorted(statuses.items()))}")
    assert sent >= 10 * len(operations)
    assert not any(code >= 500 for code in statuses)
    assert any(200 <= code < 300 for code in statuses) and any(400 <= code < 500 for code in statuses)
