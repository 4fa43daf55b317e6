"""DESIGN section 4 as decided by a real Mosquitto 2.0 with its dynamic-security plugin,
compared with `backend/domain/acl.py` over random users, client ids, topics and filters.

The accounts are created by our own directory code (`DynsecDirectory.bootstrap` and
`provisioned`), the broker config is the embedded Mosquitto's (`MosquittoChild`, the same
plugin + `acl_file` chain as deploy/mosquitto-dynsec.conf). What is observed is only what
the broker does: which publishes an observer sees, which messages a client receives,
what SUBACK says.

Documented exceptions (DESIGN 5.1; deploy/README.md "Mosquitto without go-auth"):

1. SUBSCRIBE: with an `acl_file` configured, Mosquitto 2.0.11 grants every valid
   subscription (its default ACL check does not check subscriptions), so the plugin's
   subscribe rules are not consulted. The policy holds on *delivery*: a client receives
   exactly the topics section 4 lets it read (property 2), whatever it subscribed to.
   Checked here: every subscription acl.py allows is granted (no false refusals).
2. Client ids: a bank may connect only with its pinned client id, not also with its UUID
   (the plugin pins one id per account); other credential holders can take over any
   client id (no CONNECT rule in the plugin), hence the backend's unguessable id suffix.
3. Superusers (`MQTT_SUPERUSERS`) do not exist in this mode (create such an account with
   `mosquitto_ctrl` and a role of your own).
4. Topics whose first level starts with `$` are not generated for publish/receive: `#`
   does not match them (MQTT), and Mosquitto itself answers `$SYS`/`$CONTROL`;
   test_control_topic_is_only_for_the_admin covers `$CONTROL`.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backend.broker.mosquitto import MosquittoChild
from backend.config import Settings
from backend.domain.acl import Access, UserKind, check_acl, permissions
from backend.dynsec.directory import DynsecDirectory
from backend.dynsec.policy import acl_json
from tests.support.dynsec import admin_command, dynsec_settings, needs_dynsec

pytestmark = [pytest.mark.mosquitto, needs_dynsec, pytest.mark.timeout(300)]

BANK_A = "0b5a5e1e-aaaa-4aaa-8aaa-00000000000a"
BANK_B = "0b5a5e1e-bbbb-4bbb-8bbb-00000000000b"
PROV_ID = "locker-client-1234abcd"
OTHER_ID = "locker-client-99999999"
WAIT = 5.0


@dataclass
class Peer:
    """One connected MQTT client (paho, its own network thread)."""

    name: str
    kind: UserKind
    username: str
    client_id: str
    client: mqtt.Client
    inbox: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    acks: queue.Queue[list[int]] = field(default_factory=queue.Queue)

    def subscribe(self, filter_: str) -> int:
        self.client.subscribe(filter_, qos=1)
        return self.acks.get(timeout=WAIT)[0]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def wait_for(self, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including `payload` (in order)."""
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + WAIT
        while True:
            item = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            seen.append(item)
            if item[1] == payload:
                return seen


def connect(port: int, name: str, kind: UserKind, user: str, pw: str, cid: str) -> Peer:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
    client.username_pw_set(user, pw)
    peer = Peer(name, kind, user, cid, client)
    connected: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc.value)
    client.on_message = lambda _c, _u, m: peer.inbox.put((m.topic, m.payload))
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: peer.acks.put([c.value for c in codes])
    client.connect("127.0.0.1", port)
    client.loop_start()
    code = connected.get(timeout=WAIT)
    assert code == 0, f"{name} could not connect: {code}"
    return peer


@dataclass
class World:
    settings: Settings
    peers: dict[str, Peer]
    observer: Peer
    nonce: Iterator[int]


async def _accounts(settings: Settings) -> None:
    directory = DynsecDirectory(settings)
    await directory.bootstrap()
    await directory.provisioned(BANK_A, "pinned-a", "pw-a")
    await directory.provisioned(BANK_B, "pinned-b", "pw-b")
    everything = [
        ("publishClientSend", "#"),
        ("publishClientReceive", "#"),
        ("subscribePattern", "#"),
    ]
    await admin_command(
        settings,
        {"command": "createRole", "rolename": "observer", "acls": acl_json(everything)},
        {
            "command": "createClient",
            "username": "observer",
            "password": "obs",
            "roles": [{"rolename": "observer"}],
        },
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("dynsec-acl")
    settings = dynsec_settings(tmp)
    child = MosquittoChild(
        data_dir=tmp,
        port=settings.mqtt_port,
        admin_user=settings.dynsec_admin_user,
        admin_password=settings.secret("dynsec_admin_password"),
    )
    process = subprocess.Popen(child.prepare(), stderr=subprocess.DEVNULL)
    peers: dict[str, Peer] = {}
    try:
        asyncio.run(_wait_and_create(settings))
        port = settings.mqtt_port
        backend_pw = settings.secret("mqtt_password")
        prov_pw = settings.secret("mqtt_provisioning_password")
        peers = {
            "backend": connect(
                port,
                "backend",
                UserKind.BACKEND,
                settings.mqtt_user,
                backend_pw,
                settings.backend_client_id,
            ),
            "bank_a": connect(port, "bank_a", UserKind.DEVICE, BANK_A, "pw-a", "pinned-a"),
            "bank_b": connect(port, "bank_b", UserKind.DEVICE, BANK_B, "pw-b", "pinned-b"),
            "provisioning": connect(
                port,
                "provisioning",
                UserKind.PROVISIONING,
                settings.mqtt_provisioning_user,
                prov_pw,
                PROV_ID,
            ),
        }
        observer = connect(port, "observer", UserKind.SUPERUSER, "observer", "obs", "obs-1")
        assert observer.subscribe("#") == 1
        for peer in peers.values():  # receive checks: each sees what the broker lets through
            assert peer.subscribe("#") == 1  # exception 1: granted to everyone
        yield World(settings, peers, observer, itertools.count())
    finally:
        for peer in [*peers.values()]:
            peer.client.loop_stop()
            peer.client.disconnect()
        process.terminate()
        process.wait(10)


async def _wait_and_create(settings: Settings) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            await _accounts(settings)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # the broker is still starting: no other signal


LITERALS = [
    "locker",
    BANK_A,
    BANK_B,
    "command",
    "response",
    "event",
    "state",
    "status",
    "heartbeat",
    "connection",
    "provisioning",
    "reply",
    "register",
    PROV_ID,
    OTHER_ID,
    "pinned-a",
    "server",
    "probe",
    "x",
    "",
]
PLAIN = ["locker", "server", "x", "", BANK_A]


def _patterns(only: str | None = None) -> list[list[str]]:
    """The patterns of section 4 for the four users here (or one of them), as levels."""
    found: list[list[str]] = []
    for name, kind, user, cid in (
        ("backend", UserKind.BACKEND, "locker_backend", "b"),
        ("bank_a", UserKind.DEVICE, BANK_A, "pinned-a"),
        ("bank_b", UserKind.DEVICE, BANK_B, "pinned-b"),
        ("provisioning", UserKind.PROVISIONING, "provisioning_client", PROV_ID),
    ):
        if only is None or only == name:
            perms = permissions(kind, user, cid)
            found += [p.split("/") for p in (*perms.publish, *perms.read)]
    return found


PATTERNS = _patterns()
LEVEL = st.sampled_from(LITERALS)


@st.composite
def _near_policy(draw: st.DrawFn, wildcards: bool, user: str | None = None) -> str:
    """A topic (or filter) built from a section 4 pattern: wildcards filled in (or kept,
    for filters), then perhaps one level changed, dropped or added: the edges of the
    policy, where a wrong decision would hide."""
    levels: list[str] = []
    for level in draw(st.sampled_from(_patterns(user) if user else PATTERNS)):
        if level == "+":
            levels.append("+" if wildcards and draw(st.booleans()) else draw(LEVEL))
        elif level == "#":
            if wildcards and draw(st.booleans()):
                levels.append("#")
            else:
                levels += draw(st.lists(LEVEL, max_size=2))
        else:
            levels.append(level)
    mutation = draw(st.sampled_from(["none", "none", "none", "change", "drop", "add"]))
    if mutation == "change" and levels:
        choices = LITERALS + (["+", "#"] if wildcards else [])
        levels[draw(st.integers(0, len(levels) - 1))] = draw(st.sampled_from(choices))
    elif mutation == "drop" and len(levels) > 1:
        del levels[draw(st.integers(0, len(levels) - 1))]
    elif mutation == "add":
        levels.insert(draw(st.integers(0, len(levels))), draw(LEVEL))
    if "#" in levels:
        levels = levels[: levels.index("#") + 1]
    return "/".join(levels)


def _random_topics(wildcards: bool) -> st.SearchStrategy[str]:
    """Topics from the policy's literals in any order."""
    level = st.sampled_from(LITERALS + (["+"] if wildcards else []))
    first = st.sampled_from(PLAIN + (["+"] if wildcards else []))
    body = st.tuples(first, st.lists(level, min_size=0, max_size=4)).map(lambda t: [t[0], *t[1]])
    if wildcards:
        body = st.tuples(body, st.booleans()).map(lambda t: t[0] + ["#"] if t[1] else t[0])
    return body.map("/".join)


def _topics(wildcards: bool, user: str) -> st.SearchStrategy[str]:
    """Near the user's own patterns, near anyone's, or anything."""
    own = _near_policy(wildcards, user)
    anyone = _near_policy(wildcards)
    return st.one_of(own, own, own, anyone, _random_topics(wildcards)).filter(
        lambda t: t != "" and not t.startswith("$")
    )


def _policy(peer: Peer, topic: str, acc: Access) -> bool:
    return bool(check_acl(peer.kind, peer.username, peer.client_id, topic, int(acc)))


def _sentinel_publish_topic(peer: Peer) -> str:
    return {
        UserKind.BACKEND: "server/status",
        UserKind.DEVICE: f"locker/{peer.username}/event",
        UserKind.PROVISIONING: "locker/register/sentinel",
    }[peer.kind]


def _sentinel_receive_topic(peer: Peer) -> str:
    return {
        UserKind.BACKEND: "locker/sentinel/event",
        UserKind.DEVICE: f"locker/{peer.username}/command",
        UserKind.PROVISIONING: f"locker/provisioning/reply/{peer.client_id}",
    }[peer.kind]


USERS = st.sampled_from(["backend", "bank_a", "bank_b", "provisioning"])
HYPOTHESIS = settings(
    max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@HYPOTHESIS
@given(user=USERS, data=st.data())
def test_publish_decisions_match_acl_py(world: World, user: str, data: st.DataObject) -> None:
    """Property 1 (acc 2): a publish reaches the observer iff acl.py allows it."""
    topic = data.draw(_topics(False, user), label="topic")
    peer = world.peers[user]
    nonce = next(world.nonce)
    probe, sentinel = f"probe-{nonce}".encode(), f"sentinel-{nonce}".encode()
    peer.publish(topic, probe)
    peer.publish(_sentinel_publish_topic(peer), sentinel)  # allowed: marks "done"
    seen = world.observer.wait_for(sentinel)
    delivered = any(p == probe for _t, p in seen)
    event(f"{user} publish {'allowed' if delivered else 'refused'}")
    assert delivered == _policy(peer, topic, Access.WRITE), (user, topic, seen)


@HYPOTHESIS
@given(user=USERS, data=st.data())
def test_receive_decisions_match_acl_py(world: World, user: str, data: st.DataObject) -> None:
    """Property 2 (acc 1): subscribed to everything, a client receives a message iff
    acl.py lets it read that topic."""
    topic = data.draw(_topics(False, user), label="topic")
    peer = world.peers[user]
    nonce = next(world.nonce)
    probe, sentinel = f"probe-{nonce}".encode(), f"sentinel-{nonce}".encode()
    world.observer.publish(topic, probe)
    world.observer.publish(_sentinel_receive_topic(peer), sentinel)
    seen = peer.wait_for(sentinel)
    received = any(p == probe for _t, p in seen)
    event(f"{user} receive {'allowed' if received else 'refused'}")
    assert received == _policy(peer, topic, Access.READ), (user, topic, seen)


@HYPOTHESIS
@given(user=USERS, data=st.data())
def test_subscriptions_acl_py_allows_are_granted(
    world: World, user: str, data: st.DataObject
) -> None:
    """Property 3 (acc 4): no false refusals. (Exception 1: refusals are not made at
    subscribe time; property 2 shows what such a subscription delivers.)"""
    filter_ = data.draw(_topics(True, user), label="filter")
    peer = world.peers[user]
    code = peer.subscribe(filter_)
    peer.client.unsubscribe(filter_)
    allowed = _policy(peer, filter_, Access.SUBSCRIBE)
    event(f"{user} subscribe acl.py {'allows' if allowed else 'refuses'}")
    if allowed:
        assert code < 0x80, (user, filter_, code)


def test_unknown_users_and_wrong_passwords_cannot_connect(world: World) -> None:
    port = world.settings.mqtt_port
    for user, pw in (("nobody", "pw"), (BANK_A, "wrong"), (world.settings.mqtt_user, "wrong")):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"c-{user[:8]}")
        client.username_pw_set(user, pw)
        codes: queue.Queue[int] = queue.Queue()
        client.on_connect = lambda _c, _u, _f, rc, _p, q=codes: q.put(rc.value)
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            assert codes.get(timeout=WAIT) != 0, user
        finally:
            client.loop_stop()
            client.disconnect()
        assert not bool(check_acl(UserKind.UNKNOWN, user, "c", "locker/x/state", 2))


def test_control_topic_is_only_for_the_admin(world: World) -> None:
    """Nobody but the admin account administers the plugin: a device's createClient on
    `$CONTROL/dynamic-security/v1` changes nothing."""
    import json

    bank = world.peers["bank_a"]
    command = {"commands": [{"command": "createClient", "username": "intruder", "password": "x"}]}
    bank.publish("$CONTROL/dynamic-security/v1", json.dumps(command).encode())
    nonce = next(world.nonce)
    sentinel = f"sentinel-{nonce}".encode()
    bank.publish(_sentinel_publish_topic(bank), sentinel)
    world.observer.wait_for(sentinel)
    answer = asyncio.run(
        admin_command(world.settings, {"command": "getClient", "username": "intruder"})
    )
    assert "error" in answer[0], answer


def test_retained_messages_replayed_on_subscribe_obey_the_read_rules(world: World) -> None:
    """A retained heartbeat of bank A is replayed to a new subscription only where section
    4 lets the subscriber read it (the embedded amqtt broker once replayed them to everyone:
    NOTES): the backend gets it, bank B (whose `locker/+/state` is granted, exception 1)
    does not."""
    bank_a, bank_b, backend = (world.peers[n] for n in ("bank_a", "bank_b", "backend"))
    nonce = next(world.nonce)
    retained = f"retained-{nonce}".encode()
    topic = f"locker/{BANK_A}/state"
    bank_a.client.publish(topic, retained, qos=1, retain=True).wait_for_publish(WAIT)
    sentinel = f"sentinel-{nonce}".encode()
    bank_a.publish(_sentinel_publish_topic(bank_a), sentinel)
    world.observer.wait_for(sentinel)  # the retained message is stored by now
    try:
        for peer, expected in ((backend, True), (bank_b, False)):
            drained = f"drained-{peer.name}-{nonce}".encode()
            world.observer.publish(_sentinel_receive_topic(peer), drained)
            peer.wait_for(drained)  # the live copy (the backend reads `#`) is behind us
            assert peer.subscribe("locker/+/state") == 1
            done = f"done-{peer.name}-{nonce}".encode()
            world.observer.publish(_sentinel_receive_topic(peer), done)
            seen = peer.wait_for(done)
            peer.client.unsubscribe("locker/+/state")
            got = any(p == retained for _t, p in seen)
            assert got is expected, (peer.name, seen)
            assert got == _policy(peer, topic, Access.READ)
    finally:
        bank_a.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(WAIT)
