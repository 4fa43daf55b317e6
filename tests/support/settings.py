"""The one settings builder of the tests: `make_settings(tmp_path, **overrides)`.

Fixed secrets (`TEST_SECRETS`; a subprocess that shares a test's store passes them too),
data under `tmp_path`, no `.env`. Benchmarks build theirs with it as well
(`bench/common.py: bench_settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.config import Settings, load_settings

TEST_SECRETS: dict[str, str] = {
    "secret_key": "test-secret-key",
    "mosq_secret": "test-mosq-secret",
    "mqtt_password": "backend-pw",
    "mqtt_provisioning_password": "provisioning-pw",
}
TEST_SECRETS_ENV: dict[str, str] = {name.upper(): value for name, value in TEST_SECRETS.items()}
"""The same secrets as environment variables, for a backend or hook process of a test."""


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: secrets fixed, data under tmp_path, no .env."""
    values: dict[str, Any] = {"locker_data_dir": tmp_path, **TEST_SECRETS, "_env_file": None}
    values.update(overrides)
    return load_settings(**values)
