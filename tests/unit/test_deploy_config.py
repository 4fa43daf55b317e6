"""The production Mosquitto config names only URIs and options our hook really serves."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from backend.config import Settings
from backend.http.hook import ACL_PATH, AUTH_PATH, SUPERUSER_PATH, add_hook_routes
from backend.http.users import UserDirectory

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def options(text: str, *, include_comments: bool = False) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if include_comments and line.startswith("#auth_opt_"):
            line = line[1:]
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        found[key] = value.strip()
    return found


def hook_routes() -> set[tuple[str, str]]:
    app = web.Application()
    directory = UserDirectory("locker_backend", "pw", "provisioning_client", "pw2")
    add_hook_routes(app, directory, "secret")
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}


def test_every_uri_in_the_mosquitto_config_is_a_hook_route() -> None:
    conf = options((DEPLOY / "mosquitto.conf").read_text(), include_comments=True)
    routes = hook_routes()
    uris = {k: v for k, v in conf.items() if re.fullmatch(r"auth_opt_http_\w+_uri", k)}
    assert set(uris) == {
        "auth_opt_http_getuser_uri",
        "auth_opt_http_aclcheck_uri",
        "auth_opt_http_superuser_uri",
    }
    expected = {
        "auth_opt_http_getuser_uri": AUTH_PATH,
        "auth_opt_http_aclcheck_uri": ACL_PATH,
        "auth_opt_http_superuser_uri": SUPERUSER_PATH,
    }
    for key, uri in uris.items():
        parts = urlsplit(uri)
        assert parts.path == expected[key]
        assert ("POST", parts.path) in routes
        assert parse_qs(parts.query) == {"mosq_secret": ["CHANGE_ME_MOSQ_SECRET"]}


def test_modes_and_endpoint_match_the_hook_and_settings() -> None:
    conf = options((DEPLOY / "mosquitto.conf").read_text())
    assert conf["auth_opt_backends"] == "http"
    assert conf["auth_opt_http_params_mode"] == "json"  # the hook reads JSON bodies
    assert conf["auth_opt_http_response_mode"] == "status"  # 2xx allow, 403 deny
    assert conf["allow_anonymous"] == "false"
    assert conf["set_tcp_nodelay"] == "true"  # no Nagle delay on small MQTT packets
    assert int(conf["auth_opt_http_port"]) == Settings.model_fields["hook_port"].default
    # The superuser URI is enabled only on purpose.
    assert "auth_opt_http_superuser_uri" not in conf
    assert conf["auth_opt_disable_superuser"] == "true"
    compose = (DEPLOY / "docker-compose.yml").read_text()
    assert f"\n  {conf['auth_opt_http_host']}:" in compose  # the hook host is a compose service
    assert "CHANGE_ME_MOSQ_SECRET" in compose


def test_env_example_names_only_real_settings() -> None:
    names = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("# Generate")
    }
    known = {name.upper() for name in Settings.model_fields}
    assert names <= known, names - known
    assert {"MQTT_HOST", "MOSQ_SECRET", "SECRET_KEY", "DATABASE_URL"} <= names
