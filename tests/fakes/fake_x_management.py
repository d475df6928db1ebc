"""FakeXManagement: a real aiohttp app playing X's webhook and subscription management APIs.

The v1.1 environment API, v2 webhooks with Account Activity subscriptions, X Activity API
subscriptions, the v2 users lookup and webhook replay (x-api.md §5). Like X, it

- verifies every OAuth 1.0a signature with oauthlib (FakeX's verifier) and every bearer
  token, and refuses the wrong kind of credential for an endpoint;
- keeps webhook and subscription state, one webhook per v1.1 environment by default;
- performs a real CRC GET against a webhook URL when asked to register or re-validate it,
  refusing a late, non-200 or wrong ``response_token`` answer (v1.1: 400 code 214; v2:
  problem JSON or ``valid: false``) and marking a re-validated webhook invalid.

    fake = FakeXManagement(consumer_key="k", consumer_secret="s", bearer_token="b")
    owner = fake.add_user("1111", token="1111-tok", secret="sec")
    server = await aiohttp_server(fake.make_app())
    ...
    assert [call.principal for call in fake.mutations()] == ["1111"]
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from tests.fakes.fake_x import (
    FakeXUser,
    _Incoming,
    _OAuthVerifier,
    _Reject,
    _response,
    v2_problem,
    v11_error,
)

_FIRST_ID = 1_900_000_000_000_000_000
_REPLAY_TIME = re.compile(r"[0-9]{12}")
_PROBLEMS = "https://api.x.com/2/problems/"
MAX_REPLAY_AGE = timedelta(days=5)

CRC_LATENCY = "High latency on CRC GET request. Your webhook should respond in less than 3 seconds."
CRC_NON_200 = "Non-200 response code during CRC GET request (i.e. 404, 500, etc)."
CRC_BAD_TOKEN = (
    "Webhook URL does not meet the requirements. Invalid CRC token or json response format."
)
URL_REQUIREMENTS = (
    "Webhook URL does not meet the requirements. Please consult: "
    "https://developer.x.com/en/docs/twitter-api/enterprise/account-activity-api/guides/"
    "securing-webhooks"
)
TOO_MANY = "Too many resources already created."
NO_PAGE = "Sorry, that page does not exist."

Auth = Literal["bearer", "oauth"]
Version = Literal["1.1", "2"]
Handler = Callable[[_Incoming, str], Awaitable[tuple[int, Any]]]


@dataclass
class FakeWebhook:
    """A registered webhook: v1.1 ones belong to an environment, v2 ones to the app."""

    id: str
    url: str
    version: Version
    env: str | None
    valid: bool = True
    created_at: float = field(default_factory=time.time)

    def v11(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "valid": self.valid,
            "created_timestamp": time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime()),
        }

    def v2(self) -> dict[str, Any]:
        created = datetime.fromtimestamp(self.created_at, UTC).isoformat().replace("+00:00", "Z")
        return {"id": self.id, "url": self.url, "valid": self.valid, "created_at": created}


@dataclass(frozen=True)
class ManagementCall:
    """One request as the fake answered it; ``principal`` is "app" or the signing user id."""

    method: str
    path: str
    principal: str | None
    query: dict[str, str]
    json: Any
    status: int


@dataclass(frozen=True)
class CrcCheck:
    """A CRC GET the fake made, and why it failed (None when it passed)."""

    url: str
    failure: str | None
    at: float


@dataclass(frozen=True)
class XaaSubscription:
    """An X Activity API subscription."""

    subscription_id: str
    event_type: str
    user_id: str
    direction: str | None
    webhook_id: str | None
    tag: str | None

    def as_json(self) -> dict[str, Any]:
        filter_: dict[str, Any] = {"user_id": self.user_id}
        if self.direction is not None:
            filter_["direction"] = self.direction
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return {
            "subscription_id": self.subscription_id,
            "event_type": self.event_type,
            "filter": filter_,
            "webhook_id": self.webhook_id,
            "tag": self.tag,
            "created_at": now,
            "updated_at": now,
        }


def _v11(status: int, code: int, message: str) -> _Reject:
    return _Reject(status, v11_error(code, message))


def _problem(status: int, title: str, detail: str, kind: str = "invalid-request") -> _Reject:
    return _Reject(status, v2_problem(title, detail, status, _PROBLEMS + kind))


def _not_found(what: str, key: str) -> _Reject:
    return _problem(
        404, "Not Found Error", f"Could not find {what}: [{key}].", "resource-not-found"
    )


class FakeXManagement:
    """X's management endpoints over in-memory state; see the module docstring."""

    def __init__(
        self,
        *,
        consumer_key: str,
        consumer_secret: str,
        bearer_token: str,
        max_webhooks: int = 1,
        crc_timeout: float = 3.0,
        require_https: bool = False,
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.bearer_token = bearer_token
        self.max_webhooks = max_webhooks
        self.crc_timeout = crc_timeout
        self.require_https = require_https
        self._tokens: dict[str, FakeXUser] = {}
        self._verifier = _OAuthVerifier({consumer_key: consumer_secret}, self._tokens)
        self._ids = itertools.count(_FIRST_ID)
        self.usernames: dict[str, tuple[str, str]] = {}
        self.webhooks: dict[str, FakeWebhook] = {}
        self.v11_subscriptions: dict[str, set[str]] = {}
        self.v2_subscriptions: dict[str, set[str]] = {}
        self.xaa_subscriptions: dict[str, XaaSubscription] = {}
        self.replays: list[dict[str, Any]] = []
        self.calls: list[ManagementCall] = []
        self.crc_checks: list[CrcCheck] = []

    # -- registry and scripting ---------------------------------------------------------

    def add_user(
        self, user_id: str, *, token: str, secret: str, username: str | None = None
    ) -> FakeXUser:
        """An account whose token pair signs as it; ``username`` makes it findable by lookup."""
        user = FakeXUser(user_id=user_id, token=token, secret=secret)
        self._tokens[token] = user
        if username is not None:
            self.usernames[username.lower()] = (user_id, username)
        return user

    def invalidate(self, webhook_id: str) -> None:
        """What X does when its periodic CRC fails: no events until the webhook is re-validated."""
        self.webhooks[webhook_id].valid = False

    def add_webhook(self, url: str, *, version: Version, env: str | None = None) -> FakeWebhook:
        """A webhook registered beforehand (no CRC), e.g. one for a stale URL."""
        webhook = FakeWebhook(self._new_id(), url, version, env if version == "1.1" else None)
        self.webhooks[webhook.id] = webhook
        return webhook

    # -- records ------------------------------------------------------------------------

    def mutations(self) -> list[ManagementCall]:
        """Accepted calls that change state (POST, DELETE; PUT only re-validates)."""
        return [
            call for call in self.calls if call.method in ("POST", "DELETE") and call.status < 400
        ]

    def calls_to(self, method: str, path_pattern: str) -> list[ManagementCall]:
        """Calls whose method matches and whose path matches the regular expression."""
        return [
            call
            for call in self.calls
            if call.method == method and re.fullmatch(path_pattern, call.path)
        ]

    def webhooks_of(self, version: Version, env: str | None = None) -> list[FakeWebhook]:
        return [
            webhook
            for webhook in self.webhooks.values()
            if webhook.version == version and (version == "2" or webhook.env == env)
        ]

    def subscribed(self, webhook_id: str) -> set[str]:
        """User ids subscribed to a webhook, whatever the API generation."""
        webhook = self.webhooks.get(webhook_id)
        if webhook is None:
            return set()
        if webhook.version == "1.1":
            return set(self.v11_subscriptions.get(webhook.env or "", set()))
        xaa = {
            s.user_id
            for s in self.xaa_subscriptions.values()
            if s.webhook_id == webhook_id and s.event_type == "dm.received"
        }
        return self.v2_subscriptions.get(webhook_id, set()) | xaa

    # -- serving ------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        env = "/1.1/account_activity/all/{env}"
        v11: list[tuple[str, str, Auth, Handler]] = [
            ("GET", f"{env}/webhooks.json", "bearer", self._v11_list),
            ("POST", f"{env}/webhooks.json", "oauth", self._v11_register),
            ("PUT", f"{env}/webhooks/{{id}}.json", "oauth", self._v11_crc),
            ("DELETE", f"{env}/webhooks/{{id}}.json", "oauth", self._v11_delete),
            ("POST", f"{env}/subscriptions.json", "oauth", self._v11_subscribe),
            ("GET", f"{env}/subscriptions.json", "oauth", self._v11_is_subscribed),
            ("GET", f"{env}/subscriptions/list.json", "bearer", self._v11_subscriptions),
            ("DELETE", f"{env}/subscriptions/{{user_id}}.json", "bearer", self._v11_unsubscribe),
        ]
        aaa = "/2/account_activity/webhooks/{id}/subscriptions"
        v2: list[tuple[str, str, Auth, Handler]] = [
            ("GET", "/2/webhooks", "bearer", self._v2_list),
            ("POST", "/2/webhooks", "bearer", self._v2_register),
            ("POST", "/2/webhooks/replay", "bearer", self._replay),
            ("PUT", "/2/webhooks/{id}", "bearer", self._v2_crc),
            ("DELETE", "/2/webhooks/{id}", "bearer", self._v2_delete),
            ("POST", f"{aaa}/all", "oauth", self._v2_subscribe),
            ("GET", f"{aaa}/all", "oauth", self._v2_is_subscribed),
            ("GET", f"{aaa}/all/list", "bearer", self._v2_subscriptions),
            ("DELETE", f"{aaa}/{{user_id}}/all", "bearer", self._v2_unsubscribe),
            ("POST", "/2/activity/subscriptions", "oauth", self._xaa_subscribe),
            ("GET", "/2/activity/subscriptions", "bearer", self._xaa_subscriptions),
            ("DELETE", "/2/activity/subscriptions/{id}", "bearer", self._xaa_unsubscribe),
            ("GET", "/2/users/by/username/{username}", "bearer", self._lookup),
        ]
        for version, routes in (("1.1", v11), ("2", v2)):
            for method, path, auth, handler in routes:
                app.router.add_route(method, path, self._route(auth, version, handler))
        return app

    def _route(
        self, auth: Auth, version: Version, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            principal: str | None = None
            incoming: _Incoming | None = None
            try:
                incoming = await _Incoming.read(request, f"{request.scheme}://{request.host}")
                principal = self._authenticate(incoming, auth, version)
                status, body = await handler(incoming, principal)
            except _Reject as reject:
                status, body = reject.status, reject.body
            self.calls.append(
                ManagementCall(
                    method=request.method,
                    path=request.path,
                    principal=principal,
                    query=dict(request.query),
                    json=incoming.json if incoming else None,
                    status=status,
                )
            )
            return _response(status, body, {})

        return handle

    def _authenticate(self, incoming: _Incoming, auth: Auth, version: Version) -> str:
        header = incoming.headers.get("Authorization", "")
        if auth == "bearer":
            if header.startswith("OAuth "):
                raise self._wrong_auth(version, "OAuth 1.0a User Context", "Application-Only")
            token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
            if not token or not hmac.compare_digest(token.encode(), self.bearer_token.encode()):
                raise self._unauthorized(version, 89, "Invalid or expired token.")
            return "app"
        if header.startswith("Bearer "):
            raise self._wrong_auth(version, "OAuth 2.0 Application-Only", "User Context")
        try:
            return self._verifier.user_for(incoming)
        except _Reject:
            if version == "2":
                raise _problem(401, "Unauthorized", "Unauthorized", "unauthorized") from None
            raise

    @staticmethod
    def _wrong_auth(version: Version, used: str, supported: str) -> _Reject:
        if version == "1.1":
            return _v11(403, 220, "Your credentials do not allow access to this resource.")
        return _problem(
            403,
            "Unsupported Authentication",
            f"Authenticating with {used} is forbidden for this endpoint. "
            f"Supported authentication types are [{supported}].",
            "unsupported-authentication",
        )

    @staticmethod
    def _unauthorized(version: Version, code: int, message: str) -> _Reject:
        if version == "1.1":
            return _v11(401, code, message)
        return _problem(401, "Unauthorized", "Unauthorized", "unauthorized")

    def _new_id(self) -> str:
        return str(next(self._ids))

    # -- CRC ----------------------------------------------------------------------------

    def _expected_token(self, crc_token: str) -> str:
        digest = hmac.new(self.consumer_secret.encode(), crc_token.encode(), hashlib.sha256)
        return "sha256=" + base64.b64encode(digest.digest()).decode()

    async def _crc(self, url: str) -> str | None:
        """GET ``url`` with a fresh crc_token as X does; the failure message, or None."""
        crc_token = secrets.token_urlsafe(24)
        failure: str | None = None
        try:
            timeout = aiohttp.ClientTimeout(total=self.crc_timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(
                    url, params={"crc_token": crc_token, "nonce": secrets.token_hex(8)}
                ) as response,
            ):
                if response.status != 200:
                    failure = CRC_NON_200
                else:
                    answer = await response.json(content_type=None)
                    token = answer.get("response_token") if isinstance(answer, dict) else None
                    if token != self._expected_token(crc_token):
                        failure = CRC_BAD_TOKEN
        except TimeoutError:
            failure = CRC_LATENCY
        except (aiohttp.ClientError, ValueError):
            failure = CRC_NON_200
        self.crc_checks.append(CrcCheck(url, failure, time.time()))
        return failure

    def _url_problem(self, url: str | None) -> str | None:
        if not url:
            return "url: missing"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return URL_REQUIREMENTS
        if self.require_https and (parts.scheme != "https" or parts.port is not None):
            return URL_REQUIREMENTS
        return None

    # -- v1.1 ---------------------------------------------------------------------------

    def _v11_webhook(self, incoming: _Incoming) -> FakeWebhook:
        webhook = self.webhooks.get(incoming.match_info["id"])
        if webhook is None or webhook.version != "1.1" or webhook.env != incoming.match_info["env"]:
            raise _v11(404, 34, NO_PAGE)
        return webhook

    async def _v11_list(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        return 200, [w.v11() for w in self.webhooks_of("1.1", incoming.match_info["env"])]

    async def _v11_register(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        env = incoming.match_info["env"]
        url = incoming.fields.get("url")
        problem = self._url_problem(url)
        if problem is not None or url is None:
            raise _v11(400, 214, problem or "url: missing")
        existing = self.webhooks_of("1.1", env)
        if any(w.url == url for w in existing):
            raise _v11(400, 214, "Webhook URL already exists for this environment.")
        if len(existing) >= self.max_webhooks:
            raise _v11(400, 214, TOO_MANY)
        failure = await self._crc(url)
        if failure is not None:
            raise _v11(400, 214, failure)
        webhook = FakeWebhook(self._new_id(), url, "1.1", env)
        self.webhooks[webhook.id] = webhook
        return 200, webhook.v11()

    async def _v11_crc(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v11_webhook(incoming)
        failure = await self._crc(webhook.url)
        webhook.valid = failure is None
        if failure is not None:
            raise _v11(400, 214, failure)
        return 204, None

    async def _v11_delete(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v11_webhook(incoming)
        del self.webhooks[webhook.id]
        self.v11_subscriptions.pop(webhook.env or "", None)
        return 204, None

    async def _v11_subscribe(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        env = incoming.match_info["env"]
        if not self.webhooks_of("1.1", env):
            raise _v11(404, 34, NO_PAGE)
        subscribed = self.v11_subscriptions.setdefault(env, set())
        if principal in subscribed:
            raise _v11(409, 355, "Subscription already exists.")
        subscribed.add(principal)
        return 204, None

    async def _v11_is_subscribed(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        if principal in self.v11_subscriptions.get(incoming.match_info["env"], set()):
            return 204, None
        raise _v11(404, 34, NO_PAGE)

    async def _v11_subscriptions(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        env = incoming.match_info["env"]
        users = sorted(self.v11_subscriptions.get(env, set()))
        return 200, {
            "environment": env,
            "application_id": "13090192",
            "subscriptions": [{"user_id": user_id} for user_id in users],
        }

    async def _v11_unsubscribe(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        subscribed = self.v11_subscriptions.get(incoming.match_info["env"], set())
        user_id = incoming.match_info["user_id"]
        if user_id not in subscribed:
            raise _v11(404, 34, NO_PAGE)
        subscribed.discard(user_id)
        return 204, None

    # -- v2 webhooks --------------------------------------------------------------------

    def _v2_webhook(self, webhook_id: str) -> FakeWebhook:
        webhook = self.webhooks.get(webhook_id)
        if webhook is None or webhook.version != "2":
            raise _not_found("webhook with id", webhook_id)
        return webhook

    async def _v2_list(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhooks = [w.v2() for w in self.webhooks_of("2")]
        meta = {"result_count": len(webhooks)}
        return 200, ({"data": webhooks, "meta": meta} if webhooks else {"meta": meta})

    async def _v2_register(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        body = incoming.json if isinstance(incoming.json, dict) else {}
        url = body.get("url") if isinstance(body.get("url"), str) else None
        problem = self._url_problem(url)
        if problem is not None or url is None:
            raise _problem(400, "Invalid Request", problem or "url: missing")
        existing = self.webhooks_of("2")
        if any(w.url == url for w in existing):
            raise _problem(400, "Invalid Request", "DuplicateUrlFailed: the URL is registered.")
        if len(existing) >= self.max_webhooks:
            raise _problem(403, "Forbidden", "WebhookLimitExceeded: too many webhooks.")
        failure = await self._crc(url)
        if failure is not None:
            raise _problem(400, "Invalid Request", f"CrcValidationFailed: {failure}")
        webhook = FakeWebhook(self._new_id(), url, "2", None)
        self.webhooks[webhook.id] = webhook
        return 200, {"data": webhook.v2()}

    async def _v2_crc(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v2_webhook(incoming.match_info["id"])
        failure = await self._crc(webhook.url)
        webhook.valid = failure is None
        return 200, {"data": {"valid": webhook.valid}}

    async def _v2_delete(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v2_webhook(incoming.match_info["id"])
        del self.webhooks[webhook.id]
        self.v2_subscriptions.pop(webhook.id, None)
        for key, sub in list(self.xaa_subscriptions.items()):
            if sub.webhook_id == webhook.id:
                del self.xaa_subscriptions[key]
        return 200, {"data": {"deleted": True}}

    # -- v2 Account Activity subscriptions ----------------------------------------------

    async def _v2_subscribe(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v2_webhook(incoming.match_info["id"])
        if incoming.json != {}:
            raise _problem(400, "Invalid Request", "the body must be an empty JSON object")
        subscribed = self.v2_subscriptions.setdefault(webhook.id, set())
        if principal in subscribed:
            raise _problem(409, "Conflict", "DuplicateSubscriptionFailed", "duplicate")
        subscribed.add(principal)
        return 200, {"data": {"subscribed": True}}

    async def _v2_is_subscribed(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v2_webhook(incoming.match_info["id"])
        return 200, {"data": {"subscribed": principal in self.v2_subscriptions.get(webhook.id, ())}}

    async def _v2_subscriptions(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v2_webhook(incoming.match_info["id"])
        users = sorted(self.v2_subscriptions.get(webhook.id, set()))
        return 200, {
            "data": {
                "application_id": "13090192",
                "webhook_id": webhook.id,
                "webhook_url": webhook.url,
                "subscriptions": [{"user_id": user_id} for user_id in users],
            }
        }

    async def _v2_unsubscribe(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        webhook = self._v2_webhook(incoming.match_info["id"])
        user_id = incoming.match_info["user_id"]
        subscribed = self.v2_subscriptions.get(webhook.id, set())
        if user_id not in subscribed:
            raise _not_found("subscription for user", user_id)
        subscribed.discard(user_id)
        return 200, {"data": {"subscribed": False}}

    # -- X Activity API subscriptions ---------------------------------------------------

    async def _xaa_subscribe(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        body = incoming.json if isinstance(incoming.json, dict) else {}
        filter_ = body.get("filter") if isinstance(body.get("filter"), dict) else {}
        user_id = filter_.get("user_id")
        event_type = body.get("event_type")
        webhook_id = body.get("webhook_id")
        if event_type not in ("dm.received", "dm.sent", "dm.read", "dm.indicate_typing"):
            raise _problem(400, "Invalid Request", "event_type: unsupported")
        if not isinstance(user_id, str) or not user_id.isdigit():
            raise _problem(400, "Invalid Request", "filter.user_id: must be a string id")
        if user_id != principal:
            # dm.* are private events: only the account itself may subscribe to them.
            raise _problem(403, "Forbidden", "a private event needs that user's own context")
        if webhook_id is not None:
            self._v2_webhook(str(webhook_id))
        subscription = XaaSubscription(
            subscription_id=self._new_id(),
            event_type=event_type,
            user_id=user_id,
            direction=filter_.get("direction"),
            webhook_id=None if webhook_id is None else str(webhook_id),
            tag=body.get("tag"),
        )
        if any(
            (s.event_type, s.user_id, s.direction, s.webhook_id)
            == (event_type, user_id, subscription.direction, subscription.webhook_id)
            for s in self.xaa_subscriptions.values()
        ):
            raise _problem(409, "Conflict", "DuplicateSubscription", "duplicate")
        self.xaa_subscriptions[subscription.subscription_id] = subscription
        meta = {"total_subscriptions": len(self.xaa_subscriptions)}
        return 200, {"data": {"subscription": subscription.as_json()}, "meta": meta}

    async def _xaa_subscriptions(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        items = [s.as_json() for s in self.xaa_subscriptions.values()]
        return 200, {"data": items, "meta": {"total_subscriptions": len(items)}}

    async def _xaa_unsubscribe(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        subscription_id = incoming.match_info["id"]
        if self.xaa_subscriptions.pop(subscription_id, None) is None:
            raise _not_found("subscription with id", subscription_id)
        meta = {"total_subscriptions": len(self.xaa_subscriptions)}
        return 200, {"data": {"deleted": True}, "meta": meta}

    # -- users and replay ---------------------------------------------------------------

    async def _lookup(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        asked = incoming.match_info["username"]
        found = self.usernames.get(asked.lower())
        if found is None:
            return 200, {
                "errors": [
                    {
                        "value": asked,
                        "detail": f"Could not find user with username: [{asked}].",
                        "title": "Not Found Error",
                        "resource_type": "user",
                        "parameter": "username",
                        "resource_id": asked,
                        "type": _PROBLEMS + "resource-not-found",
                    }
                ]
            }
        user_id, username = found
        return 200, {"data": {"id": user_id, "name": f"The {username}", "username": username}}

    async def _replay(self, incoming: _Incoming, principal: str) -> tuple[int, Any]:
        body = incoming.json if isinstance(incoming.json, dict) else {}
        self._v2_webhook(str(body.get("webhook_id")))
        start, end = (_replay_time(body.get(name), name) for name in ("from_date", "to_date"))
        now = datetime.now(UTC)
        if start >= end:
            raise _problem(400, "Invalid Request", "from_date must be before to_date")
        if end > now:
            raise _problem(400, "Invalid Request", "to_date must not be in the future")
        if start < now - MAX_REPLAY_AGE:
            raise _problem(400, "Invalid Request", "from_date must be within the last 5 days")
        job = {"job_id": self._new_id(), "created_at": now.isoformat().replace("+00:00", "Z")}
        self.replays.append({**body, **job})
        return 200, {"data": job}


def _replay_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not _REPLAY_TIME.fullmatch(value):
        raise _problem(400, "Invalid Request", f"{name}: must be yyyymmddhhmm")
    return datetime.strptime(value, "%Y%m%d%H%M").replace(tzinfo=UTC)
