"""X's webhook and subscription management API as a small synchronous client (x-api.md §5).

One interface, ``WebhookApi``, over the three generations: the v1.1 premium environment
API (``V11Api``), v2 webhooks with Account Activity subscriptions (``V2Api``), and v2
webhooks with X Activity API ``dm.received`` subscriptions (``XaaApi``). User-context calls
are signed with requests-oauthlib's OAuth1, app calls carry the bearer token.

It knows nothing of bots, queues or configuration keys: callers pass the credentials,
and a failure is a ``ManagementError`` saying which call failed with which credential.
The daemon runs it in a worker thread (``asyncio.to_thread``); the CLI calls it directly.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests
from requests_oauthlib import OAuth1

from twitter_bot.x.errors import XApiError, XError, XTransportError, error_from_response

Generation = Literal["v1.1", "v2", "xaa"]
Credential = Literal["bearer", "owner", "account"]
"""Which credential a call uses: the app's bearer token, the app owner's token, an account's."""

REPLAY_TIME_FORMAT = "%Y%m%d%H%M"
# X replays at most this far back (its replay documentation: "up to 5 days").
MAX_REPLAY_AGE = timedelta(days=5)
DM_RECEIVED = "dm.received"
XAA_TAG = "twitter-bot"
DEFAULT_TIMEOUT = 30.0

# What each call is, in the words of an error line: "X refused to <action>".
LIST_WEBHOOKS = "list the webhooks"
REGISTER = "register the webhook"
TRIGGER_CRC = "trigger a CRC"
DELETE = "delete the webhook"
LIST_SUBSCRIPTIONS = "list the subscriptions"
SUBSCRIBE = "subscribe the account"
UNSUBSCRIBE = "unsubscribe the account"
LOOKUP = "look up the user"
REPLAY = "request a replay"


@dataclass(frozen=True)
class UserToken:
    """An account's OAuth 1.0a access token pair, with its user id when known."""

    token: str = field(repr=False)
    secret: str = field(repr=False)
    user_id: str | None = None


@dataclass(frozen=True)
class AppCredentials:
    """The X app: consumer key pair, bearer token, and the app owner's token (v1.1 webhooks)."""

    consumer_key: str
    consumer_secret: str = field(repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    owner: UserToken | None = None


@dataclass(frozen=True)
class Webhook:
    """A registered webhook; ``valid`` is false once X's last CRC failed."""

    id: str
    url: str
    valid: bool
    created_at: str | None = None


@dataclass(frozen=True)
class Subscription:
    """An account whose events go to the webhook; XAA subscriptions also have their own id."""

    user_id: str
    subscription_id: str | None = None


@dataclass(frozen=True)
class User:
    """An X account found by username."""

    id: str
    username: str
    name: str


@dataclass(frozen=True)
class ReplayJob:
    """A replay X accepted; the events arrive on the webhook, then a completion event."""

    job_id: str
    created_at: str | None


class CredentialMissing(XError):
    """A call needs a credential the caller did not provide."""

    def __init__(self, credential: Credential, action: str) -> None:
        self.credential = credential
        self.action = action
        super().__init__(f"{action} needs the {credential} credential")


class ManagementError(XError):
    """A management call failed: which call, with which credential, and why (``cause``)."""

    def __init__(
        self,
        action: str,
        credential: Credential,
        cause: XApiError | XTransportError,
        user_id: str | None = None,
    ) -> None:
        self.action = action
        self.credential = credential
        self.cause = cause
        self.user_id = user_id
        super().__init__(f"{action}: {cause}")

    @property
    def retryable(self) -> bool:
        return self.cause.retryable


def replay_time(moment: datetime) -> str:
    """``yyyymmddhhmm`` in UTC, the replay API's time format."""
    return moment.astimezone(UTC).strftime(REPLAY_TIME_FORMAT)


def same_url(first: str, second: str) -> bool:
    """Whether two webhook URLs are the same, ignoring case of scheme and host and default ports."""

    def key(url: str) -> tuple[str, str, int | None, str, str]:
        parts = urlsplit(url.strip())
        try:
            port = parts.port
        except ValueError:
            port = None
        default = {"http": 80, "https": 443}.get(parts.scheme.lower())
        return (
            parts.scheme.lower(),
            (parts.hostname or "").lower(),
            None if port == default else port,
            parts.path or "/",
            parts.query,
        )

    return key(first) == key(second)


def find_webhook(webhooks: list[Webhook], url: str) -> Webhook | None:
    """The webhook registered for ``url``, if any."""
    return next((webhook for webhook in webhooks if same_url(webhook.url, url)), None)


class _Transport:
    """One requests session, the base URL and the credentials; maps failures to errors."""

    def __init__(
        self,
        base_url: str,
        app: AppCredentials,
        *,
        session: requests.Session | None,
        timeout: float,
        redact: Callable[[str], str],
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else f"{base_url}/"
        self._app = app
        self._session = session or requests.Session()
        self._timeout = timeout
        self._redact = redact

    def close(self) -> None:
        self._session.close()

    def bearer(self, action: str, method: str, path: str, *, body: Any = None) -> tuple[int, Any]:
        token = self._app.bearer_token
        if not token:
            raise CredentialMissing("bearer", action)
        headers = {"Authorization": f"Bearer {token}"}
        return self._send(action, "bearer", None, method, path, headers=headers, body=body)

    def signed(
        self,
        action: str,
        method: str,
        path: str,
        *,
        as_owner: bool = False,
        account: UserToken | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """A user-context call: as the app owner, or as ``account``."""
        credential: Credential = "owner" if as_owner else "account"
        token = self._app.owner if as_owner else account
        if token is None:
            raise CredentialMissing(credential, action)
        auth = OAuth1(
            self._app.consumer_key,
            client_secret=self._app.consumer_secret,
            resource_owner_key=token.token,
            resource_owner_secret=token.secret,
        )
        return self._send(
            action, credential, token.user_id, method, path, auth=auth, params=params, body=body
        )

    def _send(
        self,
        action: str,
        credential: Credential,
        user_id: str | None,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        auth: OAuth1 | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=params,
                json=body,
                headers=headers,
                auth=auth,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            reason = self._redact(f"{type(exc).__name__}: {exc}")
            raise ManagementError(action, credential, XTransportError(reason), user_id) from None
        if response.status_code >= 400:
            cause = error_from_response(
                response.status_code, response.headers, response.content, self._redact
            )
            raise ManagementError(action, credential, cause, user_id)
        return response.status_code, _json_or_none(response.content)


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content) if content.strip() else None
    except ValueError:
        return None


def _unexpected(action: str, credential: Credential, status: int, what: str) -> ManagementError:
    return ManagementError(
        action, credential, XApiError(status, None, f"unexpected answer: {what}")
    )


def _text_field(raw: Any, name: str) -> str | None:
    value = raw.get(name) if isinstance(raw, dict) else None
    return None if value is None or isinstance(value, dict | list) else str(value)


def _webhook(raw: Any, action: str, credential: Credential, status: int) -> Webhook:
    webhook_id, url = _text_field(raw, "id"), _text_field(raw, "url")
    if webhook_id is None or url is None:
        raise _unexpected(action, credential, status, "a webhook without id or url")
    created = _text_field(raw, "created_at") or _text_field(raw, "created_timestamp")
    return Webhook(id=webhook_id, url=url, valid=raw.get("valid") is True, created_at=created)


def _data(body: Any) -> Any:
    return body.get("data") if isinstance(body, dict) else None


class WebhookApi(ABC):
    """Webhook and subscription management, the same for every API generation."""

    generation: Generation

    def __init__(
        self,
        base_url: str,
        app: AppCredentials,
        *,
        env_name: str = "DEFAULT",
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self._http = _Transport(base_url, app, session=session, timeout=timeout, redact=redact)
        self.env_name = env_name

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()

    @abstractmethod
    def list_webhooks(self) -> list[Webhook]:
        """Every webhook registered (v1.1: in the environment; v2: for the app)."""

    @abstractmethod
    def register_webhook(self, url: str) -> Webhook:
        """Register ``url``; X runs a CRC against it first and refuses when it fails."""

    @abstractmethod
    def trigger_crc(self, webhook_id: str) -> bool:
        """Have X run a CRC now; true when the webhook is valid afterwards."""

    @abstractmethod
    def delete_webhook(self, webhook_id: str) -> None:
        """Remove the webhook (and with it its subscriptions)."""

    @abstractmethod
    def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        """The accounts whose DM events are delivered to the webhook."""

    @abstractmethod
    def subscribe(self, webhook_id: str, account: UserToken) -> None:
        """Subscribe ``account`` (signed with its own token) to the webhook."""

    @abstractmethod
    def unsubscribe(self, webhook_id: str, subscription: Subscription) -> None:
        """Stop delivering the subscription's events."""

    def lookup_user(self, username: str) -> User:
        """The account named ``username`` (v2 users lookup, bearer)."""
        status, body = self._http.bearer(
            LOOKUP, "GET", f"2/users/by/username/{quote(username.lstrip('@'), safe='')}"
        )
        data = _data(body)
        user_id = _text_field(data, "id")
        if user_id is None:
            # v2 answers 200 with only "errors" for an unknown username.
            errors = body.get("errors") if isinstance(body, dict) else None
            first = errors[0] if isinstance(errors, list) and errors else {}
            detail = _text_field(first, "detail") or f"no user named {username}"
            raise ManagementError(LOOKUP, "bearer", XApiError(404, None, detail))
        return User(
            id=user_id,
            username=_text_field(data, "username") or username,
            name=_text_field(data, "name") or "",
        )

    def replay(self, webhook_id: str, start: datetime, end: datetime) -> ReplayJob:
        """Ask X to redeliver the events of ``[start, end)`` to a v2 webhook (minute precision)."""
        body = {
            "webhook_id": webhook_id,
            "from_date": replay_time(start),
            "to_date": replay_time(end),
        }
        status, answer = self._http.bearer(REPLAY, "POST", "2/webhooks/replay", body=body)
        # x-api.md wraps the job in "data"; X's reference shows it bare: accept both.
        job = _data(answer) if isinstance(_data(answer), dict) else answer
        job_id = _text_field(job, "job_id")
        if job_id is None:
            raise _unexpected(REPLAY, "bearer", status, "no job_id")
        return ReplayJob(job_id=job_id, created_at=_text_field(job, "created_at"))


class V11Api(WebhookApi):
    """The v1.1 premium Account Activity API: webhooks and subscriptions per environment."""

    generation: Generation = "v1.1"

    def _env(self, rest: str) -> str:
        return f"1.1/account_activity/all/{quote(self.env_name, safe='')}/{rest}"

    def list_webhooks(self) -> list[Webhook]:
        status, body = self._http.bearer(LIST_WEBHOOKS, "GET", self._env("webhooks.json"))
        if not isinstance(body, list):
            raise _unexpected(LIST_WEBHOOKS, "bearer", status, "not a list of webhooks")
        return [_webhook(item, LIST_WEBHOOKS, "bearer", status) for item in body]

    def register_webhook(self, url: str) -> Webhook:
        status, body = self._http.signed(
            REGISTER, "POST", self._env("webhooks.json"), as_owner=True, params={"url": url}
        )
        return _webhook(body, REGISTER, "owner", status)

    def trigger_crc(self, webhook_id: str) -> bool:
        # 204 means the CRC passed; a failed one is an error (code 214).
        path = self._env(f"webhooks/{quote(webhook_id, safe='')}.json")
        self._http.signed(TRIGGER_CRC, "PUT", path, as_owner=True)
        return True

    def delete_webhook(self, webhook_id: str) -> None:
        path = self._env(f"webhooks/{quote(webhook_id, safe='')}.json")
        self._http.signed(DELETE, "DELETE", path, as_owner=True)

    def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        status, body = self._http.bearer(
            LIST_SUBSCRIPTIONS, "GET", self._env("subscriptions/list.json")
        )
        items = body.get("subscriptions") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise _unexpected(LIST_SUBSCRIPTIONS, "bearer", status, "no subscriptions list")
        return _subscriptions(items)

    def subscribe(self, webhook_id: str, account: UserToken) -> None:
        self._http.signed(SUBSCRIBE, "POST", self._env("subscriptions.json"), account=account)

    def unsubscribe(self, webhook_id: str, subscription: Subscription) -> None:
        path = self._env(f"subscriptions/{quote(subscription.user_id, safe='')}.json")
        self._http.bearer(UNSUBSCRIBE, "DELETE", path)


def _subscriptions(items: list[Any]) -> list[Subscription]:
    found = [_text_field(item, "user_id") for item in items]
    return [Subscription(user_id=user_id) for user_id in found if user_id is not None]


class V2Api(WebhookApi):
    """v2 webhooks (bearer) with Account Activity subscriptions per webhook."""

    generation: Generation = "v2"

    def list_webhooks(self) -> list[Webhook]:
        status, body = self._http.bearer(LIST_WEBHOOKS, "GET", "2/webhooks")
        items = _data(body)
        if items is None:  # no webhooks: X leaves "data" out
            return []
        if not isinstance(items, list):
            raise _unexpected(LIST_WEBHOOKS, "bearer", status, "data is not a list")
        return [_webhook(item, LIST_WEBHOOKS, "bearer", status) for item in items]

    def register_webhook(self, url: str) -> Webhook:
        status, body = self._http.bearer(REGISTER, "POST", "2/webhooks", body={"url": url})
        return _webhook(_data(body), REGISTER, "bearer", status)

    def trigger_crc(self, webhook_id: str) -> bool:
        status, body = self._http.bearer(
            TRIGGER_CRC, "PUT", f"2/webhooks/{quote(webhook_id, safe='')}"
        )
        data = _data(body)
        if not isinstance(data, dict) or "valid" not in data:
            raise _unexpected(TRIGGER_CRC, "bearer", status, "no valid flag")
        return data["valid"] is True

    def delete_webhook(self, webhook_id: str) -> None:
        self._http.bearer(DELETE, "DELETE", f"2/webhooks/{quote(webhook_id, safe='')}")

    def _subscriptions_path(self, webhook_id: str, rest: str) -> str:
        return f"2/account_activity/webhooks/{quote(webhook_id, safe='')}/subscriptions/{rest}"

    def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        status, body = self._http.bearer(
            LIST_SUBSCRIPTIONS, "GET", self._subscriptions_path(webhook_id, "all/list")
        )
        data = _data(body)
        items = data.get("subscriptions") if isinstance(data, dict) else None
        if items is None and isinstance(data, dict):
            return []
        if not isinstance(items, list):
            raise _unexpected(LIST_SUBSCRIPTIONS, "bearer", status, "no subscriptions list")
        return _subscriptions(items)

    def subscribe(self, webhook_id: str, account: UserToken) -> None:
        path = self._subscriptions_path(webhook_id, "all")
        self._http.signed(SUBSCRIBE, "POST", path, account=account, body={})

    def unsubscribe(self, webhook_id: str, subscription: Subscription) -> None:
        user = quote(subscription.user_id, safe="")
        self._http.bearer(
            UNSUBSCRIBE, "DELETE", self._subscriptions_path(webhook_id, f"{user}/all")
        )


class XaaApi(V2Api):
    """v2 webhooks with X Activity API ``dm.received`` subscriptions, one per account."""

    generation: Generation = "xaa"

    def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        status, body = self._http.bearer(LIST_SUBSCRIPTIONS, "GET", "2/activity/subscriptions")
        items = _data(body)
        if items is None:
            return []
        if not isinstance(items, list):
            raise _unexpected(LIST_SUBSCRIPTIONS, "bearer", status, "data is not a list")
        found = []
        for item in items:
            filter_ = item.get("filter") if isinstance(item, dict) else None
            user_id = _text_field(filter_, "user_id")
            if (
                user_id is not None
                and _text_field(item, "event_type") == DM_RECEIVED
                and _text_field(item, "webhook_id") == webhook_id
            ):
                found.append(Subscription(user_id, _text_field(item, "subscription_id")))
        return found

    def subscribe(self, webhook_id: str, account: UserToken) -> None:
        if account.user_id is None:
            raise ValueError("an XAA subscription filters on the account's user id")
        body = {
            "event_type": DM_RECEIVED,
            "filter": {"user_id": account.user_id, "direction": "inbound"},
            "webhook_id": webhook_id,
            "tag": XAA_TAG,
        }
        # dm.received is a private event: created in the account's own user context.
        self._http.signed(SUBSCRIBE, "POST", "2/activity/subscriptions", account=account, body=body)

    def unsubscribe(self, webhook_id: str, subscription: Subscription) -> None:
        if subscription.subscription_id is None:
            raise ValueError("an XAA subscription is deleted by its subscription id")
        path = f"2/activity/subscriptions/{quote(subscription.subscription_id, safe='')}"
        self._http.bearer(UNSUBSCRIBE, "DELETE", path)


_APIS: dict[Generation, type[WebhookApi]] = {"v1.1": V11Api, "v2": V2Api, "xaa": XaaApi}


def webhook_api(
    generation: Generation,
    base_url: str,
    app: AppCredentials,
    *,
    env_name: str = "DEFAULT",
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    redact: Callable[[str], str] = lambda text: text,
) -> WebhookApi:
    """The management client of an API generation; ``base_url`` has no version segment."""
    return _APIS[generation](
        base_url, app, env_name=env_name, session=session, timeout=timeout, redact=redact
    )
