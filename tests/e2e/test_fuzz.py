"""Schemathesis over the running service (issue 8 section 7): whatever a client sends, the
answer is never a 5xx, and (issue 10 section 3) it is one the OpenAPI document declares:
status code, content type and body schema, and a request that breaks the document is
refused. Bounded (25 generated requests per operation), on the embedded mode
and on PostgreSQL + Redis (with the projector), so `make test` and CI run it in minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.pg import fresh_database
from tests.support.redis_db import prefixed, redis_url
from tests.support.server import ADMIN_TOKEN, Server, running_service, service_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("ATP_FUZZ_EXAMPLES", "25"))
"""Generated requests per operation and mode (raise it for a deeper run outside CI)."""


@pytest.fixture(scope="module", params=["embedded", "postgres+redis"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A service of its own per mode: the fuzzer creates tokens, channels and integrations."""
    if request.param == "embedded":
        data_dir = tmp_path_factory.mktemp("fuzz")
        with running_service(service_env(None, str(data_dir))) as srv:
            yield srv
        return
    with fresh_database() as url, prefixed(0, "fuzz") as (_, prefix):
        env = service_env(url, ATP_REDIS_URL=redis_url(0), ATP_REDIS_PREFIX=prefix)
        env["PYTHONPATH"] = str(ROOT)
        with running_service(env) as srv:
            projector = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "project"],
                env=env,
                cwd=ROOT,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
            )
            try:
                yield srv
            finally:
                os.killpg(projector.pid, signal.SIGTERM)
                projector.wait(timeout=15)


def authorised(method: str) -> dict[str, str]:
    """The hook every generated request goes through: a valid bearer token, and a fresh
    `Idempotency-Key` on every POST (the routes that change stock require one)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if method.upper() == "POST":
        headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4().hex}"
    return headers


FILLERS = (
    b'"web\xff"',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
)
"""Values spliced into a generated JSON body: invalid UTF-8, arrays and objects nested
100,000 deep (in a field the schema does not know, and in each field it knows)."""
NUMBERS = ("\u00b2", "9223372036854775808", "-1", "1e3")
"""Values for each integer query parameter: a non-ASCII digit, past int64, negative, float."""


CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
"""Each answer is one the document declares (status and media type), matches its schema,
and a request that breaks the document is refused (issue 10 section 3)."""


def _negative_in_headers(case: Any) -> bool:
    """A negative case whose broken parts are headers (and, at most, extra query parameters,
    which atp ignores like any HTTP API): `authorised` replaces Authorization and
    Idempotency-Key with valid ones, so the request sent is no longer invalid."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return False
    data = meta.phase.data
    mutations = list(getattr(data, "mutations", None) or [])
    if not mutations:
        location = getattr(data, "parameter_location", None)
        return location is not None and location.name == "HEADER"
    places = [(m.parameter_location.name, m.keywords) for m in mutations]
    return any(where == "HEADER" for where, _ in places) and all(
        where == "HEADER" or (where == "QUERY" and "additionalProperties" in keywords)
        for where, keywords in places
    )


def _integer_parameters(operation: Any) -> list[str]:
    return [p.name for p in operation.query if '"integer"' in json.dumps(p.definition)]


def hostile_variants(case: Any, integers: list[str]) -> Iterator[dict[str, Any]]:
    """Requests made from a generated case by hand-made mutations a schema cannot express
    (issue 8 section 5), as keyword arguments for `httpx.Client.request`."""
    base = {"method": case.method, "url": case.formatted_path, "params": dict(case.query or {})}
    body = case.body if isinstance(case.body, dict) else None
    if body is not None:
        for filler in FILLERS:
            for field in ["zz", *body][:4]:
                raw = json.dumps({**body, field: "__FILLER__"}).encode()
                content = raw.replace(b'"__FILLER__"', filler)
                yield {**base, "content": content, "headers": {"Content-Type": "application/json"}}
    for name in integers:
        for number in NUMBERS:
            yield {**base, "params": {**base["params"], name: number}}
    if case.path_parameters:
        for suffix in ("%0A", "%252F"):
            yield {**base, "url": case.formatted_path + suffix}


def _send_hostile(url: str, case: Any, integers: list[str], statuses: Counter[int]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for request in hostile_variants(case, integers):
            headers = {**request.pop("headers", {}), **authorised(case.method)}
            r = client.request(**request, headers=headers)
            statuses[r.status_code] += 1
            where = f"{case.method} {request['url']} {request['params']} -> {r.status_code}"
            assert r.status_code < 500, f"{where}: {r.text[:300]}"


def fuzz(operation: Any, url: str, statuses: Counter[int]) -> None:
    """EXAMPLES generated requests of one operation (positive and negative), plus the hand
    made mutations of its first one; raises AssertionError on the first 5xx."""
    integers = _integer_parameters(operation)
    mutated: list[bool] = []

    @given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
    )
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        headers = authorised(case.method)
        response = case.call(base_url=url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        assert response.status_code < 500, f"{where}: {response.text[:300]}"
        assert "Traceback" not in response.text, where
        checks = CONFORMANCE if not _negative_in_headers(case) else CONFORMANCE[:3]
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except AssertionError as failure:  # schemathesis' FailureGroup is one
            raise AssertionError(f"{where}: {str(failure).strip()[:600]}") from None
        if not mutated:
            mutated.append(True)
            _send_hostile(url, case, integers, statuses)

    call()


def test_no_generated_request_gets_a_5xx(fuzzed: Server) -> None:
    """Invariant: any request the OpenAPI document allows (positive mode), requests that
    break it (negative mode: wrong types, missing fields, values out of pattern) and
    hand-made mutations (invalid UTF-8, deep nesting, non-ASCII digits, trailing newlines,
    double-encoded slashes) are answered below 500, with no stack trace; every generated
    request's answer has a documented status and content type and matches its schema, and
    no negative request is accepted (schemathesis' conformance checks)."""
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/schema/openapi.json", timeout=30)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operations += 1
        try:
            fuzz(result.ok(), fuzzed.url, statuses)
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0])
        except ExceptionGroup as group:  # Hypothesis found several distinct failures
            failures.extend(str(e).splitlines()[0] for e in group.exceptions)
    print(f"fuzzed {operations} operations: {sorted(statuses.items())}")
    assert operations >= 20, f"only {operations} operations in the OpenAPI document"
    assert statuses.total() >= operations * EXAMPLES // 2, statuses
    assert failures == [], "\n".join(failures)
