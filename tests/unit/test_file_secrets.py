"""Secrets from `*_FILE` variables and file modes (issue 14, finding 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.config import SettingsError, load_settings
from backend.file_modes import sqlite_files, tighten


def test_secrets_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("SECRET_KEY", "k" * 40), ("MOSQ_SECRET", "m" * 40)):
        path = tmp_path / name.lower()
        path.write_text(value + "\n")
        monkeypatch.setenv(f"{name}_FILE", str(path))
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(
        _env_file=None, locker_data_dir=tmp_path / "data", mqtt_host="broker.example"
    )
    assert settings.secret("secret_key") == "k" * 40
    assert settings.secret("mosq_secret") == "m" * 40


@pytest.mark.parametrize(
    ("content", "both", "message"),
    [
        (None, False, "cannot read"),
        ("\n", False, "is empty"),
        ("k" * 40, True, "both set"),
    ],
)
def test_a_bad_secret_file_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, both: bool, message: str
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("SECRET_KEY_FILE", str(path))
    if both:
        monkeypatch.setenv("SECRET_KEY", "x" * 40)
    else:
        monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(SettingsError, match=message) as info:
        load_settings(_env_file=None, locker_data_dir=tmp_path / "data")
    assert "SECRET_KEY" in str(info.value)
    assert "x" * 40 not in str(info.value)


def test_tighten_removes_group_and_other_access(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "broker").mkdir(parents=True)
    data.chmod(0o755)
    (data / "broker").chmod(0o775)
    for name in ("locker.db", "locker.db-wal", "broker/broker.sqlite3"):
        (data / name).write_text("x")
        (data / name).chmod(0o644)
    outside = tmp_path / "elsewhere.db"
    outside.write_text("x")
    outside.chmod(0o666)
    tighten(data, sqlite_files(f"sqlite:///{outside}"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in [data, *data.rglob("*"), outside]}
    assert modes == {
        "data": 0o700,
        "broker": 0o700,
        "locker.db": 0o600,
        "locker.db-wal": 0o600,
        "broker.sqlite3": 0o600,
        "elsewhere.db": 0o600,
    }
    assert os.access(outside, os.R_OK)
