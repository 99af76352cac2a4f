"""Authentication and authorization of every call: `AuthGuard`.

For each call the guard finds the principal (core/security/identity.py):
a member, when the call came over the member port with a certificate from
the cluster's CA; else an account, when it carries a valid signature
(core/security/signing.py); else nobody. Then it checks the RPC's entry in
`core/access.py`:

- **members' RPCs** (registration, controller heartbeats, replication):
  only a member, of this cluster, of the right kind and group; which node a
  request may speak for is checked here too (`MEMBER_RULES`). Without TLS
  (a plaintext process, loopback only) members cannot be told apart, and
  these RPCs are open: the development setup;
- **clients' RPCs**: an account with the permission `CLIENT_RULES` names
  (publish on the topic, subscribe on the topic as the group, admin), or
  nobody if the ACL lets anonymous callers do that. Without an ACL file the
  process has no accounts and is open (loopback only, or `--insecure`);
- **operators' RPCs** (drills): only when the config enables them, and
  only for an admin account;
- the health service: anyone (load balancers and probes).

A refusal happens before the handler runs, so it changes nothing:
UNAUTHENTICATED when the caller is not proven, PERMISSION_DENIED when it is
but may not. The decision functions take plain values (clock passed in) and
are unit-tested without sockets; the interceptor only feeds them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from core.access import Callers, access_of
from core.errors import PermissionDeniedError, UnauthenticatedError, brief
from core.grpc_server import WrappingInterceptor
from core.security.acl import AclFile, Permissions
from core.security.identity import ANONYMOUS, Account, Anonymous, Kind, Member, Principal, member_of
from core.security.signing import DEFAULT_SKEW_MS, verify

# the principal of the call being handled (set by the guard around the handler)
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "tailrace_principal", default=ANONYMOUS
)

Rule = Callable[[Permissions, Any], str | None]  # None: allowed; else what permission is missing


def _publish(p: Permissions, r: Any) -> str | None:
    return None if p.may_publish(r.topic) else f"publish to topic {brief(r.topic)}"


def _take_orphan_checks(p: Permissions, r: Any) -> str | None:
    return None if p.admin or p.proxy else "take orphan checks (a proxy's account: proxy = true)"


def _subscribe_as_group(p: Permissions, r: Any) -> str | None:
    if p.may_subscribe(r.topic, r.group):
        return None
    return f"subscribe to topic {brief(r.topic)} as group {brief(r.group)}"


def _describe(p: Permissions, r: Any) -> str | None:
    return None if p.may_describe(r.topic) else f"see topic {brief(r.topic)}"


def _any_account(p: Permissions, r: Any) -> str | None:
    return None


def _admin(p: Permissions, r: Any) -> str | None:
    return None if p.admin else "administer the cluster (admin)"


def _monitor(p: Permissions, r: Any) -> str | None:
    return None if p.may_monitor() else "read the cluster's offsets and members (admin or monitor)"


def _create(p: Permissions, r: Any) -> str | None:
    return None if p.may_create(r.topic) else f"create topic {brief(r.topic)}"


CLIENT_RULES: dict[str, Rule] = {
    "/tailrace.v1.Broker/Send": _publish,
    "/tailrace.v1.Broker/SendBatch": _publish,
    "/tailrace.v1.Broker/Pull": _subscribe_as_group,
    "/tailrace.v1.Broker/CommitOffset": _subscribe_as_group,
    "/tailrace.v1.Broker/QueryOffset": _subscribe_as_group,
    "/tailrace.v1.Broker/SendBack": _subscribe_as_group,  # into the group's retry/DLQ topics
    "/tailrace.v1.Broker/LockQueues": _subscribe_as_group,
    "/tailrace.v1.Broker/UnlockQueues": _subscribe_as_group,
    "/tailrace.v1.Broker/Pop": _subscribe_as_group,
    "/tailrace.v1.Broker/AckPop": _subscribe_as_group,
    "/tailrace.v1.Broker/ChangeInvisible": _subscribe_as_group,
    "/tailrace.v1.Broker/PopDeadLetter": _subscribe_as_group,  # into the group's DLQ, as SendBack
    "/tailrace.v1.Broker/EndTransaction": _publish,  # the half's topic (the master checks it is)
    # orphans carry any topic's uncommitted bodies, and a check taken is one the producer is not asked
    # (counted once delivered): a proxy's account (`proxy = true`) or admin, never publish alone
    "/tailrace.v1.Broker/PollOrphanTransactions": _take_orphan_checks,
    "/tailrace.v1.Broker/Heartbeat": _subscribe_as_group,
    "/tailrace.v1.Broker/Unregister": _subscribe_as_group,
    "/tailrace.v1.Broker/GetQueueOffsets": _describe,
    "/tailrace.v1.Broker/CreateTopic": _create,
    "/tailrace.v1.Broker/ListTopics": _any_account,
    "/tailrace.v1.Broker/Status": _any_account,
    # the operator's commands (issue 19): any message by id or key, resets and
    # deletes: admin only, whatever the topic or group; a group's offsets and
    # members: admin or a monitor account (the console's: review R1)
    "/tailrace.v1.BrokerAdmin/DescribeGroups": _monitor,
    "/tailrace.v1.BrokerAdmin/ResetOffset": _admin,
    "/tailrace.v1.BrokerAdmin/GetMessage": _admin,
    "/tailrace.v1.BrokerAdmin/FindMessages": _admin,
    "/tailrace.v1.BrokerAdmin/DeleteTopic": _admin,
    "/tailrace.v1.NameServer/GetRoute": _any_account,  # routes are not secret (RocketMQ's are open)
    "/tailrace.v1.NameServer/ListClusters": _any_account,
    "/tailrace.v1.NameServer/ControllerStatus": _any_account,
}

OPEN_METHODS = frozenset(
    {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List"}
)

MemberRule = Callable[[Member, Member, Any], str | None]  # (caller, this process, request)


def _broker_of_my_group(caller: Member, me: Member, r: Any) -> str | None:
    if caller.kind is Kind.BROKER and caller.name == me.name:
        return None
    return f"replicate group {me.name!r} (only its own brokers may)"


def _speaks_for(caller: Member, group: str, node: int) -> str | None:
    if caller.kind is Kind.BROKER and (caller.name, caller.node) == (group, node):
        return None
    return f"speak for broker {brief(group)}/{node} (its certificate names {caller.name}/{caller.node})"


def _registers_as(caller: Member, b: Any) -> str | None:
    """A registration speaks for its node (node_id, or broker_id without a
    controller: as the registry reads it), routed as itself or as the
    master (id 0; the nameserver checks a failover master's claim with its
    controller)."""
    node = b.node_id or b.broker_id
    if b.broker_id not in (0, node):
        return f"register node {node} as broker id {b.broker_id}"
    return _speaks_for(caller, b.broker_name, node)


MEMBER_RULES: dict[str, MemberRule] = {
    "/tailrace.v1.Replication/Replicate": _broker_of_my_group,
    "/tailrace.v1.NameServer/RegisterBroker": lambda c, me, r: _registers_as(c, r.broker),
    "/tailrace.v1.NameServer/ControllerHeartbeat": lambda c, me, r: _speaks_for(c, r.group, r.node_id),
    # the registry removes only the caller's own registration (nameserver/service.py)
    "/tailrace.v1.NameServer/UnregisterBroker": lambda c, me, r: (
        None if c.kind is Kind.BROKER else "unregister brokers (only brokers may)"
    ),
}


@dataclass
class SecurityPolicy:
    """What this process demands. `me`: the member it is (its cluster
    decides who is a member); `tls`: whether it has a member port, so
    members can be told apart; `acl`: its accounts (None: none, open)."""

    me: Member
    tls: bool
    acl: AclFile | None
    allow_anonymous: bool = False
    drills: bool = False
    skew_ms: int = DEFAULT_SKEW_MS

    def authenticate(
        self,
        metadata: Sequence[tuple[str, str | bytes]],
        auth_context: Mapping[str, Any],
        method: str,
        now_ms: int,
    ) -> Principal:
        member = member_of(auth_context) if self.tls else None
        if member is not None:
            if member.cluster != self.me.cluster:
                raise UnauthenticatedError(f"{member} is not a member of cluster {self.me.cluster!r}")
            return member
        if self.acl is None:
            return ANONYMOUS
        account = verify(metadata, method, now_ms, self.acl.current(now_ms).secret_of, self.skew_ms)
        return account if account is not None else ANONYMOUS

    def authorize(self, principal: Principal, method: str, request: Any, now_ms: int) -> None:
        if method in OPEN_METHODS:
            return
        access = access_of(method)
        if access is None:
            raise PermissionDeniedError(f"{method} is not in the access table: refused")
        if access.callers is Callers.MEMBERS:
            self._authorize_member(principal, method, request)
        elif access.callers is Callers.OPERATORS:
            if not self.drills:
                raise PermissionDeniedError(
                    f"{method} is a drill RPC and drills are off (server.enable_drills)"
                )
            self._authorize_client(principal, method, request, now_ms, _admin)
        else:
            rule = CLIENT_RULES.get(method)
            if rule is None:
                raise PermissionDeniedError(f"{method} has no permission rule: refused")
            self._authorize_client(principal, method, request, now_ms, rule)

    def _authorize_member(self, principal: Principal, method: str, request: Any) -> None:
        if not self.tls:
            return  # plaintext (loopback): members cannot be told apart
        if not isinstance(principal, Member):
            raise UnauthenticatedError(
                f"{method} is for cluster members: connect to the member port with a member certificate"
            )
        rule = MEMBER_RULES.get(method)
        missing = (
            _broker_of_my_group(principal, self.me, request)
            if rule is None
            else rule(principal, self.me, request)
        )
        if missing:
            raise PermissionDeniedError(f"{principal} may not {missing}")

    def may_create_topic(self, topic: str, now_ms: int) -> bool:
        """Whether the caller of the call being handled may create `topic`
        (a send's auto-create: publishing alone does not allow it)."""
        if self.acl is None:
            return True
        principal = current_principal.get()
        acl = self.acl.current(now_ms)
        if isinstance(principal, Account):
            perms = acl.permissions.get(principal.access_key)
        elif isinstance(principal, Anonymous) and self.allow_anonymous:
            perms = acl.anonymous
        else:
            perms = None
        return perms is not None and perms.may_create(topic)

    def _authorize_client(
        self, principal: Principal, method: str, request: Any, now_ms: int, rule: Rule
    ) -> None:
        if isinstance(principal, Member):
            raise PermissionDeniedError(f"{principal} is a cluster member; {method} is for clients")
        if self.acl is None:
            return  # no accounts configured: open (loopback or --insecure)
        acl = self.acl.current(now_ms)
        if isinstance(principal, Account):
            perms = acl.permissions.get(principal.access_key)
            if perms is None:  # removed by a reload since it was authenticated
                raise UnauthenticatedError(f"unknown access key {brief(principal.access_key)}")
        elif self.allow_anonymous and acl.anonymous is not None:
            perms = acl.anonymous
        else:
            raise UnauthenticatedError(
                "this server requires a signed request (an account): anonymous access is off"
            )
        missing = rule(perms, request)
        if missing:
            raise PermissionDeniedError(f"{principal} may not {missing}")


class AuthGuard(WrappingInterceptor):
    """Runs `SecurityPolicy` in front of every handler (inside the error
    interceptor, so refusals become statuses), and exposes the caller to
    handlers as `current_principal`. The health service is left unwrapped
    (`WrappingInterceptor`): open to probes, and its `Watch` holds no thread."""

    def __init__(self, policy: SecurityPolicy, now_ms: Callable[[], int]) -> None:
        super().__init__()
        self.policy = policy
        self.now_ms = now_ms

    def _check(self, method: str, request: Any, context: grpc.ServicerContext) -> Principal:
        now = self.now_ms()
        md: Sequence[tuple[str, str | bytes]] = context.invocation_metadata() or ()
        principal = self.policy.authenticate(md, context.auth_context(), method, now)
        self.policy.authorize(principal, method, request, now)
        return principal

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.unary_unary is not None:
            uu = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                token = current_principal.set(self._check(method, request, context))
                try:
                    return uu(request, context)
                finally:
                    current_principal.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            us = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = current_principal.set(self._check(method, request, context))
                try:
                    yield from us(request, context)
                finally:
                    current_principal.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            ss = handler.stream_stream

            def stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                token = current_principal.set(
                    self._check(method, None, context)
                )  # members' streams: no request rule
                try:
                    yield from ss(requests, context)
                finally:
                    current_principal.reset(token)

            return grpc.stream_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        raise RuntimeError(f"{method}: stream-unary methods are not guarded")


def caller() -> Principal:
    """Who the call being handled comes from (for checks that need state)."""
    return current_principal.get()


__all__ = ["ANONYMOUS", "Account", "Anonymous", "AuthGuard", "SecurityPolicy", "caller", "current_principal"]
