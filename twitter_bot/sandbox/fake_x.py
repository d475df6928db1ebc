"""FakeX: a real aiohttp application playing X's DM, typing, read-receipt and media APIs.

It verifies every OAuth 1.0a signature with oauthlib, records each accepted call as an
`XCall`, attaches x-rate-limit-* headers to every answer and replays scripted failures,
so tests and the sandbox (where it is the X stand-in) exercise the real client, signing
and error mapping end to end. It lives in the package because the sandbox serves it;
tests import it through `tests.fakes.fake_x`.

    fake = FakeX()                                   # app "dev-consumer-key"/"dev-consumer-secret"
    bot = fake.add_user("4337869213")                # -> FakeXUser(user_id, token, secret)
    server = await aiohttp_server(fake.make_app())
    api_base_url, upload_url = FakeX.urls(server.make_url("/"))
    fake.fail_next(EndpointKind.DM_V11, 429, v11_error(88, "Rate limit exceeded"),
                   {"x-rate-limit-reset": "1700000000"}, for_user_id=bot.user_id)
    fake.on_call = print                             # told of every accepted call
    ...
    assert fake.sent_dms()[0].user_id == bot.user_id
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint

DEFAULT_CONSUMER_KEY = "dev-consumer-key"
DEFAULT_CONSUMER_SECRET = "dev-consumer-secret"
MAX_TEXT = 10_000
MAX_CHUNK = 5 * 1024 * 1024
_FORM = "application/x-www-form-urlencoded"
_SAFE = set(string.ascii_letters + string.digits + "-_.~")
_FIRST_ID = 1_850_000_000_000_000_000


class EndpointKind(StrEnum):
    """What a call was, for records, scripted failures, delays and rate-limit buckets."""

    DM_V11 = "dm_v11"
    DM_V2 = "dm_v2"
    INDICATE_TYPING = "indicate_typing"
    MARK_READ = "mark_read"
    MEDIA_INIT = "media_init"
    MEDIA_APPEND = "media_append"
    MEDIA_FINALIZE = "media_finalize"
    MEDIA_STATUS = "media_status"


DM_KINDS = frozenset({EndpointKind.DM_V11, EndpointKind.DM_V2})


@dataclass(frozen=True)
class FakeXUser:
    """A registered account: its user id and the access token pair that signs as it."""

    user_id: str
    token: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class XCall:
    """One accepted call. `user_id` is the owner of the token that signed it."""

    kind: EndpointKind
    user_id: str
    api_version: Literal["1.1", "2"]
    at: float
    recipient_id: str | None = None
    text: str | None = None
    quick_replies: tuple[Mapping[str, Any], ...] | None = None
    media_id: str | None = None
    event_id: str | None = None
    last_read_event_id: str | None = None
    segment_index: int | None = None
    payload: Any = None


@dataclass(frozen=True)
class Rejection:
    """One call answered with an error (bad signature, scripted failure, validation)."""

    kind: EndpointKind | None
    user_id: str | None
    status: int
    body: Any
    at: float


@dataclass
class ScriptedFailure:
    """An answer to give instead of the real one, `times` times, optionally for one user."""

    kind: EndpointKind
    status: int
    body: Any
    headers: Mapping[str, str]
    times: int
    for_user_id: str | None


@dataclass(frozen=True)
class MediaProcessing:
    """How uploads process: STATUS says in_progress `in_progress_polls` times, then the end."""

    in_progress_polls: int = 1
    check_after_secs: int = 1
    final_state: Literal["succeeded", "failed"] = "succeeded"


@dataclass
class FakeMedia:
    """An uploaded media item as FakeX tracks it."""

    media_id: str
    owner_id: str
    media_type: str
    media_category: str
    total_bytes: int
    processing: MediaProcessing | None
    segments: dict[int, bytes] = field(default_factory=dict)
    finalized: bool = False
    state: str = "pending"
    status_polls: int = 0

    @property
    def data(self) -> bytes:
        """The uploaded bytes, segments joined in index order."""
        return b"".join(self.segments[index] for index in sorted(self.segments))


def v11_error(code: int, message: str) -> dict[str, Any]:
    """A v1.1 error body: `{"errors": [{"code", "message"}]}`."""
    return {"errors": [{"code": code, "message": message}]}


def v2_problem(title: str, detail: str, status: int, type_: str = "about:blank") -> dict[str, Any]:
    """A v2 problem+json body."""
    return {"title": title, "detail": detail, "type": type_, "status": status}


class _Reject(Exception):
    """Raised by handlers to answer with an error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _v11_reject(status: int, code: int, message: str) -> _Reject:
    return _Reject(status, v11_error(code, message))


@dataclass
class _Incoming:
    """A request read once: the URI as the client signed it, fields, JSON, uploaded file."""

    method: str
    uri: str
    headers: dict[str, str]
    form_text: str | None
    fields: dict[str, str]
    json: Any
    file: bytes | None
    match_info: Mapping[str, str]

    @classmethod
    async def read(cls, request: web.Request, origin: str) -> _Incoming:
        query = dict(parse_qsl(urlsplit(request.raw_path).query, keep_blank_values=True))
        incoming = cls(
            method=request.method,
            uri=f"{origin}{request.raw_path}",
            headers=dict(request.headers),
            form_text=None,
            fields=query,
            json=None,
            file=None,
            match_info=dict(request.match_info),
        )
        await incoming._read_body(request)
        return incoming

    async def _read_body(self, request: web.Request) -> None:
        content_type = request.content_type
        if content_type == _FORM:
            self.form_text = await request.text()
            self.fields.update(parse_qsl(self.form_text, keep_blank_values=True))
        elif content_type.startswith("multipart/"):
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    self.file = value.file.read()
                else:
                    self.fields[name] = str(value)
        elif request.can_read_body:
            raw = await request.read()
            try:
                self.json = json.loads(raw)
            except ValueError as exc:
                raise _v11_reject(400, 214, "Request body is not valid JSON.") from exc


class _Validator(RequestValidator):  # type: ignore[misc]
    """oauthlib's data store: the registry's consumer apps and tokens, a nonce memory."""

    def __init__(self, apps: dict[str, str], tokens: dict[str, FakeXUser]) -> None:
        super().__init__()
        self._apps = apps
        self._tokens = tokens
        self._nonces: dict[tuple[str, str, str, str], float] = {}
        # Prune when the memory doubles, not on every call past 10,000 (that made a long
        # run quadratic: thousands of calls within the timestamp lifetime).
        self._prune_at = 10_000

    enforce_ssl = False
    allowed_signature_methods = ("HMAC-SHA1",)
    safe_characters = _SAFE
    client_key_length = (1, 200)
    access_token_length = (1, 200)
    nonce_length = (8, 200)
    timestamp_lifetime = 300
    dummy_client = "dummy-client-key"
    dummy_access_token = "dummy-access-token"

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key in self._apps

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return self._apps.get(client_key, "dummy-client-secret")

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        user = self._tokens.get(token)
        return user.secret if user else "dummy-access-secret"

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        *,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        """Refuse a nonce seen before for the same key, token and timestamp (replays)."""
        now = time.time()
        if len(self._nonces) > self._prune_at:
            self._nonces = {
                k: t for k, t in self._nonces.items() if now - t <= self.timestamp_lifetime
            }
            self._prune_at = max(10_000, 2 * len(self._nonces))
        key = (client_key, timestamp, nonce, request.resource_owner_key or "")
        if key in self._nonces:
            return False
        self._nonces[key] = now
        return True


class _OAuthVerifier:
    """Checks a request's OAuth 1.0a signature; answers with X's 401 bodies when wrong."""

    def __init__(self, apps: dict[str, str], tokens: dict[str, FakeXUser]) -> None:
        self._tokens = tokens
        self._validator = _Validator(apps, tokens)
        self._endpoint = SignatureOnlyEndpoint(self._validator)

    def user_for(self, incoming: _Incoming) -> str:
        """The user id owning the signing token, or raise `_Reject` with X's 401."""
        valid, request = self._endpoint.validate_request(
            incoming.uri, incoming.method, body=incoming.form_text, headers=incoming.headers
        )
        token = getattr(request, "resource_owner_key", None)
        if token is not None and token not in self._tokens:
            raise _v11_reject(401, 89, "Invalid or expired token.")
        if not valid or token is None:
            raise _v11_reject(401, *self._failure(request))
        return self._tokens[token].user_id

    def _failure(self, request: Any) -> tuple[int, str]:
        stamp = getattr(request, "timestamp", None) or ""
        if stamp.isdigit() and abs(time.time() - int(stamp)) > self._validator.timestamp_lifetime:
            return 135, "Timestamp out of bounds."
        return 32, "Could not authenticate you."


class _RateLimits:
    """A fixed window per (user, endpoint kind); every answer reports its state."""

    def __init__(self, limit: int, window: int) -> None:
        self.limit = limit
        self.window = window
        self._used: dict[tuple[str, EndpointKind | None], tuple[int, int]] = {}

    def _state(self, user_id: str, kind: EndpointKind | None) -> tuple[int, int]:
        now = int(time.time())
        used, reset = self._used.get((user_id, kind), (0, now + self.window))
        return (0, now + self.window) if now >= reset else (used, reset)

    def consume(self, user_id: str, kind: EndpointKind | None) -> bool:
        used, reset = self._state(user_id, kind)
        if used >= self.limit:
            return False
        self._used[(user_id, kind)] = (used + 1, reset)
        return True

    def headers(self, user_id: str | None, kind: EndpointKind | None) -> dict[str, str]:
        used, reset = self._state(user_id or "", kind)
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(max(0, self.limit - used)),
            "x-rate-limit-reset": str(reset),
        }


Handler = Callable[[_Incoming, str], Awaitable[tuple[int, Any]]]
KindOf = Callable[[_Incoming], EndpointKind]


class FakeX:
    """X's DM and media endpoints for tests: registry, signature checks, records, scripts."""

    def __init__(
        self,
        *,
        consumer_key: str = DEFAULT_CONSUMER_KEY,
        consumer_secret: str = DEFAULT_CONSUMER_SECRET,
        rate_limit: int = 1000,
        rate_window: int = 900,
        media_processing: MediaProcessing | None = None,
        strict_media: bool = True,
        public_origin: str | None = None,
    ) -> None:
        self._apps: dict[str, str] = {consumer_key: consumer_secret}
        self._tokens: dict[str, FakeXUser] = {}
        self._verifier = _OAuthVerifier(self._apps, self._tokens)
        self._limits = _RateLimits(rate_limit, rate_window)
        self._failures: list[ScriptedFailure] = []
        self._delays: dict[EndpointKind | None, float] = {}
        self._ids = itertools.count(_FIRST_ID)
        self.media_processing = media_processing
        self.strict_media = strict_media
        self.public_origin = public_origin
        self.calls: list[XCall] = []
        self.rejections: list[Rejection] = []
        self.media: dict[str, FakeMedia] = {}
        # Told of each accepted call and each rejection as it is recorded (the sandbox's view).
        self.on_call: Callable[[XCall], None] | None = None
        self.on_rejection: Callable[[Rejection], None] | None = None

    # -- registry ---------------------------------------------------------------------

    def add_app(self, consumer_key: str, consumer_secret: str) -> None:
        """Accept signatures made with another consumer key/secret."""
        self._apps[consumer_key] = consumer_secret

    def add_user(
        self, user_id: str, *, token: str | None = None, secret: str | None = None
    ) -> FakeXUser:
        """Register an account and the access token pair that signs as it."""
        user = FakeXUser(
            user_id=user_id,
            token=token or f"{user_id}-{secrets.token_hex(12)}",
            secret=secret or secrets.token_hex(20),
        )
        self._tokens[user.token] = user
        return user

    def revoke(self, token: str) -> None:
        """Forget a token: calls signed with it get 401 code 89."""
        self._tokens.pop(token, None)

    # -- scripting ----------------------------------------------------------------------

    def fail_next(
        self,
        kind: EndpointKind | str,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
        for_user_id: str | None = None,
    ) -> None:
        """Answer the next `times` calls of `kind` (from `for_user_id`, or anyone) like this.

        The call must still be correctly signed; `body` may be a dict (sent as JSON),
        str or bytes; `headers` override the default x-rate-limit-* ones.
        """
        self._failures.append(
            ScriptedFailure(
                EndpointKind(kind), status, body, dict(headers or {}), times, for_user_id
            )
        )

    def set_delay(self, seconds: float, kind: EndpointKind | str | None = None) -> None:
        """Wait before answering calls of `kind` (or every call when kind is None)."""
        self._delays[EndpointKind(kind) if kind is not None else None] = seconds

    # -- records ------------------------------------------------------------------------

    def calls_of(
        self, kind: EndpointKind | str | None = None, user_id: str | None = None
    ) -> list[XCall]:
        """Accepted calls, filtered by kind and/or sending user."""
        return [
            call
            for call in self.calls
            if (kind is None or call.kind == kind) and (user_id is None or call.user_id == user_id)
        ]

    def sent_dms(self, user_id: str | None = None) -> list[XCall]:
        """Accepted DM sends of both API versions, oldest first."""
        return [call for call in self.calls_of(user_id=user_id) if call.kind in DM_KINDS]

    async def wait_for_dms(
        self, count: int, *, user_id: str | None = None, timeout: float = 5.0
    ) -> list[XCall]:
        """Wait until at least `count` DMs were accepted (for code that sends in the background)."""
        deadline = time.monotonic() + timeout
        while len(dms := self.sent_dms(user_id)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(dms)} of {count} DMs after {timeout} s: {dms!r}")
            await asyncio.sleep(0.01)
        return dms

    def clear(self) -> None:
        """Forget records, rejections and pending scripted failures (not users or media)."""
        self.calls.clear()
        self.rejections.clear()
        self._failures.clear()

    # -- serving ------------------------------------------------------------------------

    @staticmethod
    def urls(root: Any) -> tuple[str, str]:
        """(api_base_url, upload_url) for a server root URL such as `server.make_url("/")`."""
        base = str(root).rstrip("/") + "/"
        return base, f"{base}1.1/"

    def make_app(self) -> web.Application:
        """A new web.Application over this fake's state (one per server)."""
        # Room for a full 5 MB APPEND segment plus its multipart framing.
        app = web.Application(client_max_size=6 * 1024 * 1024)
        route = self._route
        app.router.add_post(
            "/1.1/direct_messages/events/new.json", route(_const(EndpointKind.DM_V11), self._dm_v11)
        )
        app.router.add_post(
            "/2/dm_conversations/with/{participant_id}/messages",
            route(_const(EndpointKind.DM_V2), self._dm_v2),
        )
        app.router.add_post(
            "/1.1/direct_messages/indicate_typing.json",
            route(_const(EndpointKind.INDICATE_TYPING), self._typing),
        )
        app.router.add_post(
            "/1.1/direct_messages/mark_read.json",
            route(_const(EndpointKind.MARK_READ), self._mark_read),
        )
        upload = route(_media_kind, self._media)
        app.router.add_post("/1.1/media/upload.json", upload)
        app.router.add_get("/1.1/media/upload.json", upload)
        return app

    def _route(
        self, kind_of: KindOf, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            kind: EndpointKind | None = None
            user_id: str | None = None
            try:
                incoming = await _Incoming.read(request, self._origin(request))
                kind = kind_of(incoming)
                await self._delay(kind)
                user_id = self._verifier.user_for(incoming)
                status, body = await self._answer(kind, user_id, incoming, handler)
            except _Reject as reject:
                return self._reject(kind, user_id, reject.status, reject.body, {})
            except _Scripted as scripted:
                failure = scripted.failure
                return self._reject(kind, user_id, failure.status, failure.body, failure.headers)
            return _response(status, body, self._limits.headers(user_id, kind))

        return handle

    async def _answer(
        self, kind: EndpointKind, user_id: str, incoming: _Incoming, handler: Handler
    ) -> tuple[int, Any]:
        failure = self._take_failure(kind, user_id)
        if failure is not None:
            raise _Scripted(failure)
        if not self._limits.consume(user_id, kind):
            raise _v11_reject(429, 88, "Rate limit exceeded")
        return await handler(incoming, user_id)

    def _origin(self, request: web.Request) -> str:
        return self.public_origin or f"{request.scheme}://{request.host}"

    async def _delay(self, kind: EndpointKind) -> None:
        seconds = self._delays.get(kind, self._delays.get(None, 0.0))
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _take_failure(self, kind: EndpointKind, user_id: str) -> ScriptedFailure | None:
        for failure in self._failures:
            if failure.kind == kind and failure.for_user_id in (None, user_id):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _reject(
        self,
        kind: EndpointKind | None,
        user_id: str | None,
        status: int,
        body: Any,
        headers: Mapping[str, str],
    ) -> web.Response:
        rejection = Rejection(kind, user_id, status, body, time.time())
        self.rejections.append(rejection)
        if self.on_rejection is not None:
            self.on_rejection(rejection)
        merged = self._limits.headers(user_id, kind)
        if status == 429:
            merged["x-rate-limit-remaining"] = "0"
        merged.update(headers)
        return _response(status, body, merged)

    def _record(self, kind: EndpointKind, user_id: str, **fields: Any) -> None:
        version: Literal["1.1", "2"] = "2" if kind == EndpointKind.DM_V2 else "1.1"
        call = XCall(kind=kind, user_id=user_id, api_version=version, at=time.time(), **fields)
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)

    def new_id(self) -> str:
        """A fresh snowflake-like id from the sequence X's own events and media use."""
        return str(next(self._ids))

    # -- DMs ----------------------------------------------------------------------------

    async def _dm_v11(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        create = _v11_message_create(incoming.json)
        recipient_id = _id_field(create.get("target"), "recipient_id")
        data = create.get("message_data")
        if not isinstance(data, dict):
            raise _v11_reject(400, 214, "event.message_create.message_data: missing")
        text = _text(data.get("text"))
        quick_replies = _quick_replies(data.get("quick_reply"))
        media_id = self._attachment_v11(data.get("attachment"), user_id)
        event_id = self.new_id()
        self._record(
            EndpointKind.DM_V11,
            user_id,
            recipient_id=recipient_id,
            text=text,
            quick_replies=quick_replies,
            media_id=media_id,
            event_id=event_id,
            payload=incoming.json,
        )
        return 200, {"event": _v11_event(event_id, user_id, recipient_id, data)}

    async def _dm_v2(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        participant_id = incoming.match_info["participant_id"]
        body = incoming.json if isinstance(incoming.json, dict) else {}
        if not participant_id.isdigit():
            raise _Reject(400, v2_problem("Invalid Request", "participant_id is not an id", 400))
        text = body.get("text")
        media_id = self._attachment_v2(body.get("attachments"), user_id)
        if not isinstance(text, str | None) or (not text and media_id is None):
            raise _Reject(400, v2_problem("Invalid Request", "text or attachments required", 400))
        if text is not None and len(text) > MAX_TEXT:
            raise _Reject(400, v2_problem("Invalid Request", "text is too long", 400))
        event_id = self.new_id()
        self._record(
            EndpointKind.DM_V2,
            user_id,
            recipient_id=participant_id,
            text=text,
            media_id=media_id,
            event_id=event_id,
            payload=body,
        )
        conversation = "-".join(sorted((user_id, participant_id), key=int))
        return 201, {"data": {"dm_conversation_id": conversation, "dm_event_id": event_id}}

    def _attachment_v11(self, attachment: Any, user_id: str) -> str | None:
        if attachment is None:
            return None
        media = attachment.get("media") if isinstance(attachment, dict) else None
        media_id = _id_field(media, "id")
        self._check_media(media_id, user_id)
        return media_id

    def _attachment_v2(self, attachments: Any, user_id: str) -> str | None:
        if not attachments:
            return None
        if not isinstance(attachments, list) or len(attachments) != 1:
            raise _Reject(400, v2_problem("Invalid Request", "exactly one attachment", 400))
        media_id = _id_field(attachments[0], "media_id")
        self._check_media(media_id, user_id)
        return media_id

    def _check_media(self, media_id: str, user_id: str) -> None:
        if not self.strict_media:
            return
        media = self.media.get(media_id)
        if media is None or media.owner_id != user_id or media.state != "succeeded":
            raise _v11_reject(400, 324, "The validation of media ids failed.")

    async def _typing(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        recipient_id = _required(incoming.fields, "recipient_id")
        self._record(EndpointKind.INDICATE_TYPING, user_id, recipient_id=recipient_id)
        return 204, None

    async def _mark_read(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        recipient_id = _required(incoming.fields, "recipient_id")
        last_read = _required(incoming.fields, "last_read_event_id")
        self._record(
            EndpointKind.MARK_READ, user_id, recipient_id=recipient_id, last_read_event_id=last_read
        )
        return 204, None

    # -- media --------------------------------------------------------------------------

    async def _media(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        handlers = {
            EndpointKind.MEDIA_INIT: self._media_init,
            EndpointKind.MEDIA_APPEND: self._media_append,
            EndpointKind.MEDIA_FINALIZE: self._media_finalize,
            EndpointKind.MEDIA_STATUS: self._media_status,
        }
        return handlers[_media_kind(incoming)](incoming, user_id)

    def _media_init(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        total = _required(incoming.fields, "total_bytes")
        if not total.isdigit() or int(total) <= 0:
            raise _v11_reject(400, 324, "total_bytes must be a positive integer.")
        media = FakeMedia(
            media_id=self.new_id(),
            owner_id=user_id,
            media_type=_required(incoming.fields, "media_type"),
            media_category=incoming.fields.get("media_category", ""),
            total_bytes=int(total),
            processing=self.media_processing,
        )
        self.media[media.media_id] = media
        self._record(
            EndpointKind.MEDIA_INIT, user_id, media_id=media.media_id, payload=incoming.fields
        )
        return 202, {**_media_ids(media.media_id), "expires_after_secs": 86400}

    def _media_append(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        media = self._own_media(incoming, user_id)
        index = _required(incoming.fields, "segment_index")
        chunk = incoming.file
        if media.finalized or not index.isdigit() or int(index) > 999:
            raise _v11_reject(400, 324, "Invalid segment.")
        if chunk is None or not 0 < len(chunk) <= MAX_CHUNK:
            raise _v11_reject(400, 324, "Segment missing or larger than 5 MB.")
        media.segments[int(index)] = chunk
        self._record(
            EndpointKind.MEDIA_APPEND, user_id, media_id=media.media_id, segment_index=int(index)
        )
        return 204, None

    def _media_finalize(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        media = self._own_media(incoming, user_id)
        if len(media.data) != media.total_bytes or media.finalized:
            raise _v11_reject(400, 324, "Segments do not add up to provided total file size.")
        media.finalized = True
        media.state = "pending" if media.processing else "succeeded"
        self._record(EndpointKind.MEDIA_FINALIZE, user_id, media_id=media.media_id)
        body = {
            **_media_ids(media.media_id),
            "size": media.total_bytes,
            "expires_after_secs": 86400,
        }
        if media.processing:
            body["processing_info"] = {
                "state": "pending",
                "check_after_secs": media.processing.check_after_secs,
            }
        return 201, body

    def _media_status(self, incoming: _Incoming, user_id: str) -> tuple[int, Any]:
        media = self._own_media(incoming, user_id)
        if not media.finalized:
            raise _v11_reject(400, 324, "Media is not finalized.")
        _advance(media)
        self._record(EndpointKind.MEDIA_STATUS, user_id, media_id=media.media_id)
        return 200, {**_media_ids(media.media_id), "processing_info": _processing_info(media)}

    def _own_media(self, incoming: _Incoming, user_id: str) -> FakeMedia:
        media = self.media.get(incoming.fields.get("media_id", ""))
        if media is None or media.owner_id != user_id:
            raise _v11_reject(400, 324, "The validation of media ids failed.")
        return media


class _Scripted(Exception):
    def __init__(self, failure: ScriptedFailure) -> None:
        super().__init__(failure.kind)
        self.failure = failure


def _const(kind: EndpointKind) -> KindOf:
    return lambda _incoming: kind


def _media_kind(incoming: _Incoming) -> EndpointKind:
    command = incoming.fields.get("command", "")
    kinds = {
        "INIT": EndpointKind.MEDIA_INIT,
        "APPEND": EndpointKind.MEDIA_APPEND,
        "FINALIZE": EndpointKind.MEDIA_FINALIZE,
        "STATUS": EndpointKind.MEDIA_STATUS,
    }
    if command not in kinds or (command == "STATUS") != (incoming.method == "GET"):
        raise _v11_reject(400, 38, "command parameter is missing or invalid.")
    return kinds[command]


def _advance(media: FakeMedia) -> None:
    """One STATUS poll: in_progress while polls remain, then the scripted final state."""
    processing = media.processing
    if processing is None or media.state in ("succeeded", "failed"):
        return
    media.status_polls += 1
    in_progress = media.status_polls <= processing.in_progress_polls
    media.state = "in_progress" if in_progress else processing.final_state


def _processing_info(media: FakeMedia) -> dict[str, Any]:
    info: dict[str, Any] = {"state": media.state}
    if media.state == "in_progress" and media.processing:
        info["check_after_secs"] = media.processing.check_after_secs
        info["progress_percent"] = 50
    elif media.state == "failed":
        info["error"] = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}
    else:
        info["progress_percent"] = 100
    return info


def _media_ids(media_id: str) -> dict[str, Any]:
    return {"media_id": int(media_id), "media_id_string": media_id, "media_key": f"16_{media_id}"}


def _v11_message_create(body: Any) -> dict[str, Any]:
    event = body.get("event") if isinstance(body, dict) else None
    if not isinstance(event, dict) or event.get("type") != "message_create":
        raise _v11_reject(400, 214, "event.type: must be message_create")
    create = event.get("message_create")
    if not isinstance(create, dict):
        raise _v11_reject(400, 214, "event.message_create: missing")
    return create


def _v11_event(event_id: str, sender_id: str, recipient_id: str, data: Any) -> dict[str, Any]:
    return {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": str(int(time.time() * 1000)),
        "message_create": {
            "target": {"recipient_id": recipient_id},
            "sender_id": sender_id,
            "message_data": data,
        },
    }


def _id_field(container: Any, name: str) -> str:
    value = container.get(name) if isinstance(container, dict) else None
    if not isinstance(value, str) or not value.isdigit():
        raise _v11_reject(400, 214, f"{name}: must be a string id")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _v11_reject(400, 214, "message_data.text: missing")
    if len(value) > MAX_TEXT:
        raise _v11_reject(
            403, 354, "The text of your direct message is over the max character limit."
        )
    return value


def _quick_replies(quick_reply: Any) -> tuple[Mapping[str, Any], ...] | None:
    """Validate a v1.1 quick_reply as X documents it (1-20 options, label <= 36, ...)."""
    if quick_reply is None:
        return None
    if not isinstance(quick_reply, dict) or quick_reply.get("type") != "options":
        raise _v11_reject(400, 214, "quick_reply: type must be options")
    options = quick_reply.get("options")
    if not isinstance(options, list):
        raise _v11_reject(400, 214, "quick_reply.options: must be a list")
    problem = _quick_reply_problem(options)
    if problem:
        raise _v11_reject(400, 214, f"quick_reply.options: {problem}")
    return tuple(options)


def _quick_reply_problem(options: list[Any]) -> str | None:
    if not 1 <= len(options) <= 20 or not all(isinstance(o, dict) for o in options):
        return "between 1 and 20 option objects"
    for option in options:
        label = option.get("label")
        if not isinstance(label, str) or not 0 < len(label) <= 36 or "http" in label.lower():
            return "label must be 1-36 characters without URLs"
        if (
            len(str(option.get("description", ""))) > 72
            or len(str(option.get("metadata", ""))) > 1000
        ):
            return "description <= 72 and metadata <= 1000 characters"
    if len({"description" in option for option in options}) > 1:
        return "either every option has a description or none has"
    return None


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise _v11_reject(400, 214, f"{name}: missing")
    return value


def _response(status: int, body: Any, headers: Mapping[str, str]) -> web.Response:
    if body is None or status == 204:
        return web.Response(status=status, headers=headers)
    if isinstance(body, bytes | str):
        return web.Response(status=status, body=body, headers=headers)
    content_type = "application/problem+json" if "title" in body else "application/json"
    return web.Response(
        status=status, text=json.dumps(body), content_type=content_type, headers=headers
    )
