"""Who acted from where (issue 15): the origin recorded with every action."""

from __future__ import annotations

from backend.attribution import http_origin, local_origin


def test_ssh_session_names_the_client_address() -> None:
    env = {"SSH_CONNECTION": "203.0.113.7 51234 10.0.0.2 22"}
    assert local_origin(env) == "ssh from 203.0.113.7"
    assert local_origin({}) == "local"


def test_http_origin_labels_what_the_client_claims_and_keeps_what_the_server_saw() -> None:
    assert http_origin("10.0.0.5", None) == "HTTP peer 10.0.0.5"
    said = http_origin("10.0.0.5", "ssh from 203.0.113.7")
    assert said == "ssh from 203.0.113.7 (reported by client), HTTP peer 10.0.0.5"
    hostile = http_origin("10.0.0.5", "\x1b[2Jssh\x00 " + "x" * 500)
    assert "\x1b" not in hostile and "\x00" not in hostile
    assert hostile.endswith("(reported by client), HTTP peer 10.0.0.5")
    assert len(hostile) < 200
