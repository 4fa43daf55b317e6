"""Issue 8: schemathesis against the served `/api/openapi.json`.

A real `BackendServices` (embedded broker, MQTT runtime; the store on SQLite in tmp_path,
and again on PostgreSQL when TEST_DATABASE_URL is set) serves the REST API and the auth
hook on loopback. schemathesis loads the OpenAPI document from the
running server and, for every operation in it (the SSE stream excepted: its answer never
ends), generates requests with Hypothesis in two modes:

- positive: requests the schema says are valid (with an operator bearer token and the
  hook's `mosq_secret`, given to schemathesis as the document's two security schemes);
- negative: requests violating the schema (bodies, path and query parameters, missing
  credentials).

Operations with path parameters are also run (positive) with the parameters of real
objects: a provisioned bank with 4 compartments (opens answered 202), a second bank for
`revoke`/`provisioning-token`, a real transaction id. Every answer is validated by
schemathesis's checks: not a server error, status code / content type / headers / body
conform to the document, negative data rejected (4xx), positive data accepted,
credentials not ignored (the request resent without / with garbage credentials must be
refused). Afterwards the server is healthy.

Size: `RELIABILITY_SCHEMATHESIS_EXAMPLES` examples per operation and mode (CI 25, full 300).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.http.server import OPENAPI_PATH
from backend.runner import BackendServices
from tests.support.databases import DB_KINDS, truncate_all
from tests.support.http_api import provision
from tests.support.mosquitto import free_port
from tests.support.mqtt_runtime_process import fast_options
from tests.support.reliability_tools import size
from tests.support.settings import make_settings

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1800)]

EXAMPLES = size("schemathesis_examples", 25, 300)
MOSQ_SECRET = "test-mosq-secret"
NOT_FUZZED = {"GET /api/events/stream"}  # server-sent events: the answer never ends
# schemathesis leaves out the operation serving the document it loaded (validated instead).
SERVES_DOCUMENT = f"GET {OPENAPI_PATH}"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    ignored_auth,
]


@pytest.fixture(params=DB_KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BackendServices]:
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'locker.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
        truncate_all(database_url)
    services = BackendServices(
        make_settings(
            tmp_path,
            database_url=database_url,
            http_port=free_port(),
            mqtt_port=free_port(),
            mqtt_client_id=f"backend-{uuid.uuid4().hex[:8]}",
        ),
        runtime_options=fast_options(),
    )
    await services.start()
    try:
        await services.runtime.wait_connected(30)
        yield services
    finally:
        await services.stop()


def run_operation(test: Callable[..., None], strategy: Any, failures: list[str], label: str) -> str:
    """Run one Hypothesis test; a failure is recorded (not raised) so every operation runs."""
    wrapped = settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(case=strategy)(test))
    try:
        wrapped()
    except Unsatisfiable:
        return "nothing to generate"  # e.g. negative data for an operation without inputs
    except BaseException as exc:  # schemathesis raises FailureGroup, a BaseExceptionGroup
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        failures.append(f"{label}:\n{exc}")
        return "failed"
    return "passed"


async def test_schemathesis_every_operation_of_the_openapi_document(
    backend: BackendServices,
) -> None:
    service = backend.service
    ready = await provision(service, "Ready", compartments=4)
    victim = await provision(service, "Victim", compartments=2)
    txn = await service.request_config_push(ready.uuid, actor="setup")
    operator_token = await service.create_api_token("schemathesis-operator", "operator")
    base = backend.http.url if backend.http else ""
    known = {"uuid": ready.uuid, "transaction_id": txn.transaction_id}
    known_by_path = {
        "/api/locker-banks/{uuid}/revoke": {"uuid": victim.uuid},
        "/api/locker-banks/{uuid}/provisioning-token": {"uuid": victim.uuid},
    }
    config = schemathesis.Config.from_dict(
        {
            "auth": {
                "openapi": {
                    "bearer": {"bearer": operator_token},
                    "mosq_secret": {"api_key": MOSQ_SECRET},
                }
            },
            # Unknown query parameters are ignored, as HTTP APIs conventionally do; unknown
            # body fields are still refused (the request models forbid them).
            "generation": {"allow-extra-parameters": False},
        }
    )
    statuses: Counter[int] = Counter()
    outcomes: dict[str, str] = {}
    failures: list[str] = []
    requests_by_run: Counter[str] = Counter()

    def fuzz() -> set[str]:
        schema = schemathesis.openapi.from_url(base + OPENAPI_PATH, config=config, timeout=30)
        schema.validate()  # the document is valid OpenAPI 3.1 (raises otherwise)
        session = requests.Session()
        labels: set[str] = set()

        def caller(label: str) -> Callable[[Any], None]:
            def call(case: Any) -> None:
                response = case.call_and_validate(
                    base_url=base, session=session, checks=CHECKS, timeout=30
                )
                statuses[response.status_code] += 1
                requests_by_run[label] += 1

            return call

        for result in schema.get_all_operations():
            operation = result.ok()
            labels.add(operation.label)
            if operation.label in NOT_FUZZED:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{operation.label} [{mode.value}]"
                strategy = operation.as_strategy(generation_mode=mode)
                outcomes[label] = run_operation(caller(label), strategy, failures, label)
            names = {p.name for p in operation.path_parameters}
            if names:
                fixed = {n: v for n, v in known.items() if n in names}
                fixed.update(known_by_path.get(operation.path, {}))
                label = f"{operation.label} [positive, real {'/'.join(sorted(fixed))}]"
                strategy = operation.as_strategy(path_parameters=fixed)
                outcomes[label] = run_operation(caller(label), strategy, failures, label)
        session.close()
        return labels

    started = time.monotonic()
    labels = await asyncio.to_thread(fuzz)
    seconds = round(time.monotonic() - started, 1)
    async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as resp:
        healthy = resp.status
    print(
        "figures:",
        json.dumps(
            {
                "examples_per_operation_and_mode": EXAMPLES,
                "operations": len(labels),
                "runs": len(outcomes),
                "requests": statuses.total(),
                "statuses": dict(sorted(statuses.items())),
                "failed": len(failures),
                "seconds": seconds,
            }
        ),
    )
    expected = {
        f"{method.upper()} {path}"
        for path, item in (await _document(base)).items()
        for method in item
    }
    assert labels == expected - {SERVES_DOCUMENT}, "schemathesis did not see every operation"
    assert not failures, "\n\n".join(failures)
    assert set(outcomes.values()) <= {"passed", "nothing to generate"}
    assert all(requests_by_run[label] > 0 for label, o in outcomes.items() if o == "passed")
    assert not any(status >= 500 for status in statuses)
    assert healthy == 200


async def _document(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(base + OPENAPI_PATH) as resp:
        assert resp.status == 200
        paths: dict[str, Any] = (await resp.json())["paths"]
        return paths
