"""The embedded broker's logins and topic checks decided in the backend's own process.

The backend serves the auth hook (`backend.http.hook`) and runs amqtt in one process. Asked
over HTTP, every delivery cost the broker an HTTP request to itself (amqtt's
`TopicAuthHttpPlugin`, one aiohttp client request and one server request per check: a
PUBLISH check for the sender and a RECEIVE check per subscriber). Given `HookDecisions`
(`backend.http.hook_decisions`, the same object the HTTP handlers await: one copy of the
rules), the broker awaits the decision directly. Nothing is cached: each check reads the
user directory when it is asked, so a revocation applies at the next check as before.

amqtt's actions map to go-auth's `acc` values exactly as its HTTP plugin maps them.
"""

from __future__ import annotations

from typing import Protocol

from amqtt.contexts import Action
from amqtt.session import Session

from backend.domain.acl import Access, Decision

__all__ = ["ACC_OF_ACTION", "Decisions", "acl_of", "login_of"]

ACC_OF_ACTION: dict[Action, int] = {
    Action.PUBLISH: Access.WRITE,
    Action.SUBSCRIBE: Access.SUBSCRIBE,
    Action.RECEIVE: Access.READ,
}
"""amqtt's `TopicAuthHttpPlugin` numbering (publish 2, subscribe 4, receive 1)."""


class Decisions(Protocol):
    """The hook's decisions (`backend.http.hook_decisions.HookDecisions`)."""

    async def login(self, username: str, password: str, client_id: str) -> Decision: ...

    async def acl(self, username: str, client_id: str, topic: str, acc: int) -> Decision: ...


async def login_of(decisions: Decisions, session: Session) -> bool:
    """A CONNECT's login, with the fields amqtt's HTTP plugin sends (None as empty, denied)."""
    decision = await decisions.login(
        _text(session.username), _text(session.password), _text(session.client_id)
    )
    return decision.allowed


async def acl_of(decisions: Decisions, session: Session, topic: str, action: Action) -> bool:
    """One topic check of `session` (an unknown action or a missing topic is denied)."""
    acc = ACC_OF_ACTION.get(action)
    if acc is None or not isinstance(topic, str):
        return False
    decision = await decisions.acl(_text(session.username), _text(session.client_id), topic, acc)
    return decision.allowed


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
