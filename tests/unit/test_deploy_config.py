"""The production Mosquitto config names only URIs and options our hook really serves."""

from __future__ import annotations

import configparser
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


_ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
COMPOSE_ONLY = {"POSTGRES_PASSWORD"}  # read by docker-compose.yml, not by locker-console


def env_example() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2).split("#")[0].strip()
    return found


def test_env_example_names_only_real_settings() -> None:
    names = set(env_example())
    known = {name.upper() for name in Settings.model_fields} | COMPOSE_ONLY
    assert names <= known, names - known
    assert {"MQTT_HOST", "MOSQ_SECRET", "SECRET_KEY", "DATABASE_URL", "HOOK_PORT"} <= names


def test_env_example_is_complete_for_compose() -> None:
    """Every variable docker-compose.yml substitutes is in .env.example, and the database
    password compose creates PostgreSQL with is the one DATABASE_URL uses."""
    compose = (DEPLOY / "docker-compose.yml").read_text()
    wanted = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)", compose))
    env = env_example()
    assert wanted and wanted <= set(env), wanted - set(env)
    assert urlsplit(env["DATABASE_URL"]).password == env["POSTGRES_PASSWORD"]
    assert "change-me}" not in compose  # no silent default password


def _ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # configparser's documented override
    parser.read_string(path.read_text())
    return parser


def test_systemd_units_supervisor_and_readme_agree() -> None:
    env_file = "/etc/locker-console/env"
    backend = _ini(DEPLOY / "locker-console.service")["Service"]
    hook_unit = _ini(DEPLOY / "locker-console-hook.service")
    hook = hook_unit["Service"]
    socket_unit = _ini(DEPLOY / "locker-console-hook.socket")["Socket"]
    conf = options((DEPLOY / "mosquitto.conf").read_text())
    binary = "/opt/locker-console/.venv/bin/locker-console"
    assert backend["EnvironmentFile"] == hook["EnvironmentFile"] == env_file
    assert backend["ExecStartPre"] == f"{binary} db upgrade"
    assert backend["ExecStart"] == f"{binary} --headless"
    assert hook["ExecStart"] == f"{binary} hook"
    assert "locker-console-hook.socket" in hook_unit["Unit"]["Requires"]
    assert socket_unit["ListenStream"] == f"127.0.0.1:{conf['auth_opt_http_port']}"
    supervisor = _ini(DEPLOY / "supervisor.conf")
    hook_program = supervisor["program:locker-console-hook"]
    backend_program = supervisor["program:locker-console"]
    for program in (hook_program, backend_program):
        assert f". {env_file} &&" in program["command"]
    assert hook_program["command"].endswith(f"exec {binary} hook'")
    assert int(hook_program["numprocs"]) == 2
    upgrade, _, run = backend_program["command"].partition(f"{binary} db upgrade &&")
    assert upgrade and run.strip().endswith(f"exec {binary} --headless'")
    readme = (DEPLOY / "README.md").read_text()
    assert env_file in readme
    assert "locker-console-hook.socket" in readme


def test_mosquitto_conf_cache_queue_and_tls() -> None:
    text = (DEPLOY / "mosquitto.conf").read_text()
    active = [line.split(" ", 1) for line in text.splitlines() if line and line[0] != "#"]
    keys = [key for key, *_ in active]
    # go-auth takes the last value of an option: each one is set once, the cache off.
    assert keys.count("auth_opt_cache") == 1
    assert dict((k, v) for k, v in active if k != "listener")["auth_opt_cache"] == "false"
    duplicated = {k for k in keys if keys.count(k) > 1}
    assert duplicated == {"listener"}, duplicated
    conf = options(text)
    # The backend's session holds the fleet's messages while it is away:
    # 500 banks x 600 s / 5 s heartbeats = 60,000.
    assert int(conf["max_queued_messages"]) >= 60_000
    listeners = [v for k, v in active if k == "listener"]
    assert [v.split()[0] for v in listeners] == ["1883", "8883"]
    assert conf["certfile"] and conf["keyfile"]


def test_both_mosquitto_configs_give_the_backend_its_in_flight_window() -> None:
    """The backend acknowledges a message once it is stored (mqtt/acks.py): Mosquitto's
    in-flight window per client bounds what it works on at once (MQTT 3.1.1; MQTT 5 asks
    for RECEIVE_MAXIMUM itself)."""
    from backend.mqtt.acks import RECEIVE_MAXIMUM

    for name in ("mosquitto.conf", "mosquitto-dynsec.conf"):
        conf = options((DEPLOY / name).read_text())
        assert int(conf["max_inflight_messages"]) == RECEIVE_MAXIMUM, name
