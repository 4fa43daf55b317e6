"""The ACL policy (DESIGN section 4): table rows, matching, coverage, identities, properties."""

from __future__ import annotations

import itertools
import re
import sys
import unicodedata
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from backend.domain.acl import (
    Access,
    Decision,
    UserKind,
    check_acl,
    filter_covered,
    permissions,
    strip_shared_subscription,
    topic_matches,
    valid_identity,
    valid_topic_filter,
    valid_topic_name,
)
from backend.domain.digests import secret_digest
from backend.http.users import UserDirectory

U = "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"  # this device
V = "0a0b0c0d-1111-4222-8333-444455556666"  # another bank
CID = "dev-client-1"
PROV_CID = "prov-7f3a"
BACKEND, DEVICE, PROV = UserKind.BACKEND, UserKind.DEVICE, UserKind.PROVISIONING
SUPER, UNKNOWN = UserKind.SUPERUSER, UserKind.UNKNOWN
R, W, RW, S = Access.READ, Access.WRITE, Access.READWRITE, Access.SUBSCRIBE


def _ident(kind: UserKind) -> tuple[str, str]:
    return {
        BACKEND: ("locker_backend", "backend-1"),
        DEVICE: (U, CID),
        PROV: ("provisioning_client", PROV_CID),
        SUPER: ("ops_root", "root-1"),
        UNKNOWN: ("stranger", "x-1"),
    }[kind]


def _check(kind: UserKind, topic: str, acc: int, legacy: bool = True) -> Decision:
    username, client_id = _ident(kind)
    return check_acl(kind, username, client_id, topic, acc, legacy_status=legacy)


# --------------------------------------------------------------------------- the table

# (kind, topic or filter, acc, allowed): every row of DESIGN section 4, allow and deny.
TABLE: list[tuple[UserKind, str, Access, bool]] = [
    # backend publishes
    (BACKEND, f"locker/{U}/command", W, True),
    (BACKEND, "locker/provisioning/reply/abc", W, True),
    (BACKEND, "server/status", W, True),
    (BACKEND, f"locker/{U}/response", W, False),
    (BACKEND, f"locker/{U}/state", W, False),
    (BACKEND, "locker/register/tok", W, False),
    (BACKEND, f"locker/{U}/command/x", W, False),
    (BACKEND, "other/topic", W, False),
    # backend subscribes / receives
    (BACKEND, "locker/#", S, True),
    (BACKEND, "locker/+/response", S, True),
    (BACKEND, "locker/+/state/#", S, True),
    (BACKEND, "locker/register/+", S, True),
    (BACKEND, "server/status", S, True),
    (BACKEND, "$share/backends/locker/+/response", S, True),
    (BACKEND, "#", S, False),
    (BACKEND, "+/status", S, False),
    (BACKEND, "server/#", S, False),
    (BACKEND, "$SYS/#", S, False),
    (BACKEND, f"locker/{U}/response", R, True),
    (BACKEND, "locker/register/tok", R, True),
    (BACKEND, "server/status", R, True),
    (BACKEND, "other/topic", R, False),
    (BACKEND, "server/status", RW, True),
    (BACKEND, f"locker/{U}/command", RW, True),
    (BACKEND, f"locker/{U}/response", RW, False),
    # device publishes
    (DEVICE, f"locker/{U}/state", W, True),
    (DEVICE, f"locker/{U}/state/heartbeat", W, True),
    (DEVICE, f"locker/{U}/state/compartments", W, True),
    (DEVICE, f"locker/{U}/state/connection", W, True),
    (DEVICE, f"locker/{U}/response", W, True),
    (DEVICE, f"locker/{U}/event", W, True),
    (DEVICE, f"locker/{U}/status", W, True),
    (DEVICE, f"locker/{U}/command", W, False),
    (DEVICE, f"locker/{V}/state", W, False),
    (DEVICE, f"locker/{V}/response", W, False),
    (DEVICE, "server/status", W, False),
    (DEVICE, f"locker/{U}/response/x", W, False),
    (DEVICE, "locker/register/tok", W, False),
    # device subscribes / receives
    (DEVICE, f"locker/{U}/command", S, True),
    (DEVICE, "server/status", S, True),
    (DEVICE, f"$share/g/locker/{U}/command", S, True),
    (DEVICE, "locker/#", S, False),
    (DEVICE, "locker/+/command", S, False),
    (DEVICE, f"locker/{U}/#", S, False),
    (DEVICE, f"locker/{U}/+", S, False),
    (DEVICE, f"locker/{V}/command", S, False),
    (DEVICE, f"locker/{U}/state", S, False),
    (DEVICE, "#", S, False),
    (DEVICE, "+/+/command", S, False),
    (DEVICE, f"locker/{U}/command", R, True),
    (DEVICE, "server/status", R, True),
    (DEVICE, f"locker/{V}/command", R, False),
    (DEVICE, f"locker/{U}/response", R, False),
    (DEVICE, f"locker/{U}/command", RW, False),
    # provisioning client
    (PROV, "locker/register/sometoken", W, True),
    (PROV, "locker/register/a/b", W, False),
    (PROV, "locker/register", W, False),
    (PROV, f"locker/provisioning/reply/{PROV_CID}", W, False),
    (PROV, f"locker/{U}/state", W, False),
    (PROV, f"locker/provisioning/reply/{PROV_CID}", S, True),
    (PROV, f"locker/provisioning/reply/{PROV_CID}", R, True),
    (PROV, "locker/provisioning/reply/other-client", S, False),
    (PROV, "locker/provisioning/reply/other-client", R, False),
    (PROV, "locker/provisioning/reply/+", S, False),
    (PROV, "locker/provisioning/reply/#", S, False),
    (PROV, "locker/register/+", S, False),
    (PROV, "server/status", S, False),
    (PROV, f"locker/provisioning/reply/{PROV_CID}", RW, False),
    # superuser: everything
    (SUPER, "anything/at/all", W, True),
    (SUPER, "#", S, True),
    (SUPER, "$SYS/#", S, True),
    (SUPER, f"locker/{U}/command", R, True),
    (SUPER, "x/y", RW, True),
    # anyone else: nothing
    (UNKNOWN, "server/status", R, False),
    (UNKNOWN, "server/status", S, False),
    (UNKNOWN, "locker/register/tok", W, False),
    (UNKNOWN, f"locker/{U}/state", W, False),
]


@pytest.mark.parametrize(("kind", "topic", "acc", "allowed"), TABLE)
def test_acl_table_row(kind: UserKind, topic: str, acc: Access, allowed: bool) -> None:
    decision = _check(kind, topic, acc)
    assert decision.allowed is allowed, decision.reason
    assert bool(decision) is allowed
    assert decision.reason


def test_legacy_status_only_while_enabled() -> None:
    assert _check(DEVICE, f"locker/{U}/status", W, legacy=True).allowed
    decision = _check(DEVICE, f"locker/{U}/status", W, legacy=False)
    assert not decision.allowed
    assert "publish" in decision.reason
    # the other device topics do not depend on it
    assert _check(DEVICE, f"locker/{U}/response", W, legacy=False).allowed


@pytest.mark.parametrize("kind", [BACKEND, DEVICE, PROV, SUPER])
@pytest.mark.parametrize("topic", ["locker/+/command", "locker/#", "+", "#", "a/+/b"])
@pytest.mark.parametrize("acc", [R, W, RW])
def test_wildcards_refused_for_publish_and_receive(kind: UserKind, topic: str, acc: Access) -> None:
    decision = _check(kind, topic, acc)
    assert not decision.allowed
    assert "wildcard" in decision.reason


@pytest.mark.parametrize("acc", [0, 5, 6, 7, 8, -1, 2**40])
@pytest.mark.parametrize("kind", [BACKEND, SUPER])
def test_unknown_acc_denied(kind: UserKind, acc: int) -> None:
    decision = _check(kind, "server/status", acc)
    assert not decision.allowed
    assert decision.reason == "unknown access type"


@pytest.mark.parametrize("acc", [True, 2.0, "2", None])
def test_non_integer_acc_denied(acc: object) -> None:
    decision = check_acl(SUPER, "ops_root", "c", "server/status", acc)  # type: ignore[arg-type]  # a bad value on purpose
    assert not decision.allowed


@pytest.mark.parametrize("kind", [BACKEND, DEVICE, PROV, SUPER])
@pytest.mark.parametrize("bad", ["", "#", "+", "a/b", "a\x00b", "a\nb", "x" * 257])
def test_invalid_identities_deny_everything(kind: UserKind, bad: str) -> None:
    username, client_id = _ident(kind)
    topic = "server/status"
    for acc in (R, W, S):
        assert not check_acl(kind, bad, client_id, topic, acc).allowed
        assert not check_acl(kind, username, bad, topic, acc).allowed
    assert permissions(kind, bad, client_id).publish == ()
    assert permissions(kind, username, bad).read == ()


@pytest.mark.parametrize(
    "topic", ["", "a/\x00", "$share/g", "$share//x", "$share/+/x", "$queue/", "a/#/b", "a+/b"]
)
def test_malformed_filters_denied_even_for_superuser(topic: str) -> None:
    assert not _check(SUPER, topic, S).allowed


def test_invalid_topic_names_denied_even_for_superuser() -> None:
    for topic in ("", "a\x00b", "x" * 70000, "\ud800"):
        decision = _check(SUPER, topic, W)
        assert not decision.allowed
        assert decision.reason == "invalid topic"


def test_percent_u_is_one_literal_level() -> None:
    # a username that looks like a wildcard must never widen the device's rights
    for username in ("+", "#", "a/b"):
        perms = permissions(DEVICE, username, CID)
        assert perms.publish == () and perms.read == ()
    perms = permissions(DEVICE, U, CID)
    assert f"locker/{U}/command" in perms.read
    assert all(p.split("/")[1] == U for p in perms.publish)


def test_decision_helpers() -> None:
    assert Decision.allow("ok") == Decision(True, "ok")
    assert Decision.deny("no") == Decision(False, "no")
    assert not Decision.deny("no")
    assert Decision.allow("ok")


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize(
    "value",
    [U, "locker_backend", "a", "x" * 256, "Ünïcödé-ok", "a b", "$x", "nb\u00a0sp",
     "zero\u200bwidth", "rtl\u202e", "\ue000private", "\U0001f600", "\ufffe",
     "\U0010ffff", "\u00ad", "é" * 256],
)  # fmt: skip
def test_valid_identities(value: str) -> None:
    assert valid_identity(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/",
        "a/b",
        "+",
        "a+b",
        "#",
        "a#",
        "\x00",
        "a\x00",
        "\x1f",
        "\x7f",
        "\u0085",
        "\ud800",
        "x" * 257,
        "\u0080",
        "\u009f",
        "a\u0090b",
        "\udfff",
        "ok\udc80",
        "\t",
        "a\nb",
        "é" * 257,
        U + "/",
        "ü+",
        # leading or trailing whitespace (the listener's old rule, stricter: kept)
        " ",
        " dev",
        "dev ",
        "\u00a0nbsp",
        "\u00a0",
        "dev\u2003",
    ],
)
def test_invalid_identities(value: str) -> None:
    assert not valid_identity(value)


def test_identity_characters_are_judged_as_by_unicode_categories() -> None:
    """Every code point, one at a time (inside an identity), against the definition: `/ + #`
    and the general categories Cc (control) and Cs (surrogate) are refused, everything else
    is allowed."""
    wrong = [
        cp
        for cp in range(sys.maxunicode + 1)
        if valid_identity("a" + chr(cp) + "a")
        == (chr(cp) in "/+#" or unicodedata.category(chr(cp)) in ("Cc", "Cs"))
    ]
    assert wrong == []


@given(st.text(min_size=1, max_size=300))
def test_identity_matches_the_per_character_definition(value: str) -> None:
    expected = (
        len(value) <= 256
        and value == value.strip()
        and not any(ch in "/+#" or unicodedata.category(ch) in ("Cc", "Cs") for ch in value)
    )
    assert valid_identity(value) == expected


def test_non_string_identity_refused() -> None:
    assert not valid_identity(None)  # type: ignore[arg-type]  # a wrong type on purpose
    assert not valid_identity(42)  # type: ignore[arg-type]  # a wrong type on purpose


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("filter_", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("a/+", "a/", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("+/+", "/", True),
        ("+", "$SYS", False),
        ("#", "$SYS/broker", False),
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("$SYS/+", "$SYS/broker", True),
        ("a/+/c", "a/b/c", True),
        ("a/b", "a/+", False),
        ("a/#/c", "a/b/c", False),
        ("a+", "a+", False),
    ],
)
def test_topic_matches(filter_: str, topic: str, expected: bool) -> None:
    assert topic_matches(filter_, topic) is expected


@pytest.mark.parametrize(
    ("requested", "allowed", "expected"),
    [
        ("locker/+/response", ["locker/#", "server/status"], True),
        ("locker/#", ["locker/#"], True),
        ("locker", ["locker/#"], True),
        ("locker/#", [f"locker/{U}/command", "server/status"], False),
        ("locker/+/command", [f"locker/{U}/command"], False),
        (f"locker/{U}/command", [f"locker/{U}/command"], True),
        ("a/#", ["a", "a/+/#"], True),
        ("a/#", ["a/+/#"], False),
        ("a/#", ["a", "a/+"], False),
        ("a/+", ["a/+/#"], True),
        ("a/+/#", ["a/+"], False),
        ("+/b", ["a/b"], False),
        ("#", ["#"], True),
        ("#", ["+/#"], True),
        ("+/#", ["#"], True),
        ("$SYS/#", ["#"], False),
        ("$SYS/#", ["$SYS/#"], True),
        ("+/x", ["+/x", "$SYS/x"], True),
        ("server/status", ["server/status"], True),
        ("server/#", ["server/status"], False),
        ("a/b", [], False),
        ("a/b", ["a/#/b", "a/b"], True),
        ("a/#/b", ["#"], False),
    ],
)
def test_filter_covered(requested: str, allowed: list[str], expected: bool) -> None:
    assert filter_covered(requested, allowed) is expected


def test_strip_shared_subscription() -> None:
    assert strip_shared_subscription("$share/g/locker/+/response") == "locker/+/response"
    assert strip_shared_subscription("$queue/locker/#") == "locker/#"
    assert strip_shared_subscription("locker/#") == "locker/#"
    assert strip_shared_subscription("$share/g") is None
    assert strip_shared_subscription("$share/+/x") is None


# --------------------------------------------------------------------------- properties

_LEVELS = ["a", "b", "", "$s"]
_TOPIC_LEVELS = [*_LEVELS, "z", "$z"]


@st.composite
def _filters(draw: st.DrawFn, max_levels: int = 3) -> str:
    n = draw(st.integers(min_value=1, max_value=max_levels))
    levels = draw(st.lists(st.sampled_from([*_LEVELS, "+"]), min_size=n, max_size=n))
    if draw(st.booleans()):
        levels[-1] = "#"
    return "/".join(levels) or "a"  # a lone empty level is no filter


def _reference_match(filter_: str, topic: str) -> bool:
    """A regex translation of MQTT matching, independent of the module's level walk."""
    if filter_.startswith(("+", "#")) and topic.startswith("$"):
        return False
    if filter_ == "#":
        return True
    pattern = re.escape(filter_).replace(r"\+", "[^/]*")
    if pattern.endswith("/\\#"):
        pattern = pattern[: -len("/\\#")] + "(/.*)?"
    return re.fullmatch(pattern, topic, flags=re.DOTALL) is not None


@given(
    _filters(max_levels=4),
    st.lists(st.sampled_from(_TOPIC_LEVELS), min_size=1, max_size=5).map("/".join).filter(bool),
)
def test_topic_matches_agrees_with_reference(filter_: str, topic: str) -> None:
    assert valid_topic_filter(filter_) and valid_topic_name(topic)
    assert topic_matches(filter_, topic) is _reference_match(filter_, topic)


@given(
    st.text(alphabet="ab/+#$\x00", min_size=0, max_size=8),
    st.text(alphabet="ab/+#$", min_size=0, max_size=8),
)
def test_topic_matches_random_strings(filter_: str, topic: str) -> None:
    result = topic_matches(filter_, topic)
    if result:
        assert valid_topic_filter(filter_) and valid_topic_name(topic)
        assert _reference_match(filter_, topic)
    elif valid_topic_filter(filter_) and valid_topic_name(topic):
        assert not _reference_match(filter_, topic)


@settings(max_examples=300)
@given(_filters(), st.lists(_filters(), min_size=0, max_size=3))
def test_filter_covered_is_exact(requested: str, allowed: list[str]) -> None:
    """Brute force over every topic up to one level deeper than the longest filter.

    Beyond that depth the matching state of every filter no longer changes, so a
    topic the request matches but nothing allows exists iff one exists this short.
    """
    depth = max(len(f.split("/")) for f in [requested, *allowed]) + 1
    counterexample = None
    for n in range(1, depth + 1):
        for levels in itertools.product(_TOPIC_LEVELS, repeat=n):
            topic = "/".join(levels)
            if not topic:
                continue
            if topic_matches(requested, topic) and not any(
                topic_matches(a, topic) for a in allowed
            ):
                counterexample = topic
                break
        if counterexample is not None:
            break
    assert filter_covered(requested, allowed) is (counterexample is None), counterexample


_ACL_LEVELS = st.sampled_from(
    [
        U,
        V,
        "locker",
        "command",
        "state",
        "response",
        "event",
        "status",
        "server",
        "register",
        "provisioning",
        "reply",
        PROV_CID,
        "other",
        "+",
        "#",
        "",
        "$SYS",
        "$share",
        "g",
    ]
)
_any_topic = st.lists(_ACL_LEVELS, min_size=1, max_size=6).map("/".join)
_any_acc = st.sampled_from([0, 1, 2, 3, 4, 5])


def _effective(topic: str, acc: int) -> str | None:
    return strip_shared_subscription(topic) if acc == Access.SUBSCRIBE else topic


@settings(max_examples=500)
@given(_any_topic, _any_acc, st.booleans())
def test_device_never_leaves_its_own_space(topic: str, acc: int, legacy: bool) -> None:
    decision = check_acl(DEVICE, U, CID, topic, acc, legacy_status=legacy)
    if not decision.allowed:
        return
    effective = _effective(topic, acc)
    assert effective is not None
    assert effective == "server/status" or effective.startswith(f"locker/{U}/")
    if acc in (Access.READ, Access.SUBSCRIBE):
        assert effective in {f"locker/{U}/command", "server/status"}
    else:
        assert acc == Access.WRITE
        assert "+" not in effective and "#" not in effective
        assert effective != "server/status"
        assert legacy or effective != f"locker/{U}/status"


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=12), _any_topic, _any_acc)
def test_device_with_any_username_stays_in_its_space(username: str, topic: str, acc: int) -> None:
    decision = check_acl(DEVICE, username, CID, topic, acc)
    if decision.allowed:
        effective = _effective(topic, acc)
        assert valid_identity(username)
        assert effective is not None
        assert effective == "server/status" or effective.startswith(f"locker/{username}/")


@settings(max_examples=300)
@given(
    st.text(alphabet="abc-_0", min_size=1, max_size=6),
    st.text(alphabet="abc-_0+#/", min_size=1, max_size=6),
    st.sampled_from([Access.READ, Access.SUBSCRIBE]),
)
def test_provisioning_never_reads_another_reply(own: str, other: str, acc: Access) -> None:
    assume(own != other)
    topic = f"locker/provisioning/reply/{other}"
    assert not check_acl(PROV, "provisioning_client", own, topic, acc).allowed
    assert check_acl(PROV, "provisioning_client", own, f"locker/provisioning/reply/{own}", acc)


@settings(max_examples=300)
@given(st.text(alphabet="abc-_0", min_size=1, max_size=6), _any_topic, _any_acc)
def test_provisioning_reads_only_its_reply_topic(client_id: str, topic: str, acc: int) -> None:
    decision = check_acl(PROV, "provisioning_client", client_id, topic, acc)
    if decision.allowed and acc in (Access.READ, Access.SUBSCRIBE):
        assert _effective(topic, acc) == f"locker/provisioning/reply/{client_id}"
    if decision.allowed and acc == Access.WRITE:
        assert topic.startswith("locker/register/") and topic.count("/") == 2


@given(_any_topic, _any_acc)
def test_unknown_user_gets_nothing(topic: str, acc: int) -> None:
    assert not check_acl(UNKNOWN, "someone", "c", topic, acc).allowed


@given(_any_topic)
@example("server/status/")  # hypothesis found it: the test listed three patterns of five
def test_backend_publishes_only_its_own_patterns(topic: str) -> None:
    """Commands, provisioning replies, the fleet's and each instance's status, and its
    self-probe (`server/status/` itself is an instance status with an empty id)."""
    if check_acl(BACKEND, "locker_backend", "b1", topic, Access.WRITE):
        assert any(
            topic_matches(p, topic)
            for p in (
                "locker/+/command",
                "locker/provisioning/reply/+",
                "server/status",
                "server/status/+",
                "server/probe/+",
            )
        )


# --------------------------------------------------------------------------- UserDirectory

DEVICE_PASSWORD = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"


def _directory() -> UserDirectory:
    d = UserDirectory("locker_backend", "backend-pw", "provisioning_client", "prov-pw", {"ops"})
    d.device_provisioned(U, secret_digest(DEVICE_PASSWORD), "c1")  # pinned client id c1
    return d


def test_secret_digest_is_sha256_hex() -> None:
    assert secret_digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_directory_kinds_and_revocation() -> None:
    d = _directory()
    assert d.kind_of("locker_backend") is BACKEND
    assert d.kind_of("provisioning_client") is PROV
    assert d.kind_of("ops") is SUPER
    assert d.kind_of(U) is DEVICE
    assert d.kind_of(V) is UNKNOWN
    assert d.kind_of("a/b") is UNKNOWN
    assert d.is_active_device(U) and d.device_count == 1
    assert d.authenticate(U, DEVICE_PASSWORD, "c1").allowed
    assert d.acl(U, "c1", f"locker/{U}/command", 4).allowed
    d.device_revoked(U)
    assert d.kind_of(U) is UNKNOWN
    assert d.device_count == 0
    assert d.authenticate(U, DEVICE_PASSWORD, "c1") == Decision.deny("credentials revoked")
    assert not d.acl(U, "c1", f"locker/{U}/command", 4).allowed
    d.device_provisioned(U, secret_digest("new-password"), "c1")
    assert not d.authenticate(U, DEVICE_PASSWORD, "c1").allowed
    assert d.authenticate(U, "new-password", "c1").allowed


def test_directory_authenticate() -> None:
    d = _directory()
    assert d.authenticate("locker_backend", "backend-pw", "b1").allowed
    assert not d.authenticate("locker_backend", "prov-pw", "b1").allowed
    assert d.authenticate("provisioning_client", "prov-pw", "p1").allowed
    assert not d.authenticate("provisioning_client", "", "p1").allowed
    assert not d.authenticate("stranger", "backend-pw", "s1").allowed
    assert not d.authenticate("ops", "anything", "o1").allowed  # no password on file here
    assert not d.authenticate("locker_backend", "backend-pw", "a/b").allowed
    assert not d.authenticate("a/b", "backend-pw", "b1").allowed
    assert d.is_superuser("ops").allowed
    assert not d.is_superuser("locker_backend").allowed


def test_pinned_identities() -> None:
    """DESIGN section 4: pinned client id or UUID for a bank, reserved backend ids, the
    provisioning account kept off the ids of online banks; refusals counted."""
    d = _directory()
    assert d.authenticate(U, DEVICE_PASSWORD, "c1").allowed  # its pinned id
    assert d.authenticate(U, DEVICE_PASSWORD, U).allowed  # its UUID
    assert not d.authenticate(U, DEVICE_PASSWORD, "c2").allowed  # any other id
    assert not d.authenticate(U, DEVICE_PASSWORD, "locker-backend").allowed
    # the backend's ids are its own: neither a bank, nor provisioning, nor a superuser
    assert d.authenticate("locker_backend", "backend-pw", "locker-backend").allowed
    assert d.authenticate("locker_backend", "backend-pw", "locker-backend-a1").allowed
    assert not d.authenticate("provisioning_client", "prov-pw", "locker-backend").allowed
    assert not d.authenticate("provisioning_client", "prov-pw", "locker-backend-x").allowed
    # provisioning with a bank's pinned id: only while that bank is not online
    assert d.authenticate("provisioning_client", "prov-pw", "c1").allowed
    d.bank_online(U, True)
    assert not d.authenticate("provisioning_client", "prov-pw", "c1").allowed
    assert not d.authenticate("provisioning_client", "prov-pw", U).allowed
    assert d.authenticate(U, DEVICE_PASSWORD, "c1").allowed  # the bank itself still may
    d.bank_online(U, False)
    assert d.authenticate("provisioning_client", "prov-pw", "c1").allowed
    d.bank_online(U, True)
    d.device_revoked(U)  # a revoked bank is not online: its device may provision again
    assert d.authenticate("provisioning_client", "prov-pw", "c1").allowed
    refused = d.refused_connects()
    assert refused["client_id_not_pinned"] == 1
    assert refused["reserved_client_id"] == 3
    assert refused["pinned_id_of_online_bank"] == 2
    assert refused["bad_credentials"] == 0


def test_directory_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError):
        UserDirectory("a/b", "pw", "prov", "pw2")
    with pytest.raises(ValueError):
        UserDirectory("same", "pw", "same", "pw2")
    with pytest.raises(ValueError):
        UserDirectory("backend", "", "prov", "pw2")
    with pytest.raises(ValueError):
        UserDirectory("backend", "pw", "prov", "pw2", {"#"})
    d = _directory()
    with pytest.raises(ValueError):
        d.device_provisioned(U, "not-hex")
    with pytest.raises(ValueError):
        d.device_provisioned("a/b", secret_digest("x"))
    with pytest.raises(ValueError):
        d.device_provisioned("locker_backend", secret_digest("x"))


def test_remembered_acl_decisions_never_confuse_equal_keys() -> None:
    """``UserDirectory.acl`` remembers decisions for plain str/int fields only: ``True``
    (which hashes and compares like 1) is still an unknown access type after acc 1 passed,
    and a revocation changes the next answer."""
    d = UserDirectory("locker_backend", "pw", "provisioning_client", "pw2")
    d.device_provisioned(U, "a" * 64)
    topic = f"locker/{U}/command"
    assert d.acl(U, U, topic, 1).allowed
    assert d.acl(U, U, topic, 1) == d.acl(U, U, topic, 1)
    denied = d.acl(U, U, topic, True)
    assert not denied.allowed and denied.reason == "unknown access type"
    one_as_float: Any = 1.0  # as a caller without types could pass it
    assert not d.acl(U, U, topic, one_as_float).allowed
    d.device_revoked(U)
    assert not d.acl(U, U, topic, 1).allowed
    d.device_provisioned(U, "b" * 64)
    assert d.acl(U, U, topic, 1).allowed
