"""XReplySender against FakeX over real HTTP, with media served by a small local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from tests.fakes.fake_x import (
    DEFAULT_CONSUMER_KEY,
    DEFAULT_CONSUMER_SECRET,
    EndpointKind,
    FakeX,
    FakeXUser,
    XCall,
    v2_problem,
    v11_error,
)
from twitter_bot.bridge.options import OfferedOptions
from twitter_bot.bridge.outbound import (
    MAX_DM_CHARS,
    MediaLimits,
    ReplySendError,
    XReplySender,
    numbered_list,
    split_text,
    with_numbered_list,
)
from twitter_bot.gateway.replies import MediaReply, QuickReply, Reply, TextReply, TypingReply
from twitter_bot.settings import BotSettings, DmApi, MessagingSettings, Secret
from twitter_bot.x import XBadMedia, XClient, XError, XForbidden, XServerError

BOT_A_ID = "4337869213"
BOT_B_ID = "1500000000000000001"
USER_ID = "3001969357"
CONVERSATION = f"{USER_ID}-{BOT_A_ID}"

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
GIF = b"GIF89a" + bytes(range(256)) * 8
VIDEO = bytes(range(256)) * 300  # three upload segments of UPLOAD_CHUNK bytes at most
UPLOAD_CHUNK = 32 * 1024
LIMITS = MediaLimits(image=10_000, gif=20_000, video=100_000)
OPTIONS = (
    QuickReply("Order status", "Track a parcel", "status"),
    QuickReply("Talk to a human", "A person answers", "human"),
)

SenderFactory = Callable[..., XReplySender]


# -- fixtures ------------------------------------------------------------------------------


async def _png(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="image/png")


async def _octet_png(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="application/octet-stream")


async def _gif(request: web.Request) -> web.Response:
    return web.Response(body=GIF, content_type="image/gif")


async def _video(request: web.Request) -> web.Response:
    return web.Response(body=VIDEO, content_type="video/mp4")


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"\0" * (LIMITS.image + 1), content_type="image/png")


async def _big_stream(request: web.Request) -> web.StreamResponse:
    """Too big, but without a Content-Length: only counting while streaming can tell."""
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(4):
        await response.write(b"\0" * 4_000)
    await response.write_eof()
    return response


async def _empty(request: web.Request) -> web.Response:
    return web.Response(body=b"", content_type="image/png")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    return web.Response(body=PNG, content_type="image/png")


async def _to_png(request: web.Request) -> web.Response:
    raise web.HTTPFound("/media/map.png")


async def _to_ftp(request: web.Request) -> web.Response:
    raise web.HTTPFound("ftp://files.example.com/map.png")


async def _loop(request: web.Request) -> web.Response:
    raise web.HTTPFound("/media/loop")


def _media_app() -> web.Application:
    app = web.Application()
    routes = {
        "/media/map.png": _png,
        "/media/raw/photo.png": _octet_png,
        "/media/anim.gif": _gif,
        "/media/clip.mp4": _video,
        "/media/big.png": _big,
        "/media/big-stream.png": _big_stream,
        "/media/empty.png": _empty,
        "/media/slow.png": _slow,
        "/media/redirect": _to_png,
        "/media/redirect-ftp": _to_ftp,
        "/media/loop": _loop,
    }
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    return app


@pytest.fixture
def fake_x() -> FakeX:
    return FakeX()


@pytest.fixture
def user_a(fake_x: FakeX) -> FakeXUser:
    return fake_x.add_user(BOT_A_ID)


@pytest.fixture
def user_b(fake_x: FakeX) -> FakeXUser:
    return fake_x.add_user(BOT_B_ID)


def _bot(user: FakeXUser, bot_id: str) -> BotSettings:
    return BotSettings(
        user_id=user.user_id,
        bot_id=bot_id,
        access_token=Secret(user.token),
        access_secret=Secret(user.secret),
    )


@pytest.fixture
def bot_a(user_a: FakeXUser) -> BotSettings:
    return _bot(user_a, "bot-a")


@pytest.fixture
def bot_b(user_b: FakeXUser) -> BotSettings:
    return _bot(user_b, "bot-b")


@pytest.fixture
async def x_server(
    fake_x: FakeX, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> TestServer:
    return await aiohttp_server(fake_x.make_app())


@pytest.fixture
async def media_server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(_media_app())


@pytest.fixture
def media_url(media_server: TestServer) -> Callable[[str], str]:
    return lambda path: str(media_server.make_url(f"/media/{path}"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def x_client(x_server: TestServer, session: aiohttp.ClientSession) -> XClient:
    api_base_url, upload_url = FakeX.urls(x_server.make_url("/"))
    return XClient(
        session,
        consumer_key=DEFAULT_CONSUMER_KEY,
        consumer_secret=DEFAULT_CONSUMER_SECRET,
        api_base_url=api_base_url,
        upload_url=upload_url,
    )


@pytest.fixture
def offered() -> OfferedOptions:
    return OfferedOptions()


@pytest.fixture
def make_sender(
    x_client: XClient, session: aiohttp.ClientSession, offered: OfferedOptions
) -> SenderFactory:
    def make(dm_api: DmApi = "v1.1", **overrides: Any) -> XReplySender:
        options: dict[str, Any] = {
            "dm_api": dm_api,
            "limits": LIMITS,
            "options": offered,
            **overrides,
        }
        return XReplySender(x_client, session, **options)

    return make


@pytest.fixture(params=["v1.1", "v2"])
def dm_api(request: pytest.FixtureRequest) -> DmApi:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sender(make_sender: SenderFactory, dm_api: DmApi) -> XReplySender:
    return make_sender(dm_api)


def _dm_kind(dm_api: DmApi) -> EndpointKind:
    return EndpointKind.DM_V11 if dm_api == "v1.1" else EndpointKind.DM_V2


class Progress:
    """Records the on_sent calls; can run a hook (e.g. script a failure) at each one."""

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        self.sent: list[int] = []
        self._hook = hook

    async def __call__(self, count: int) -> None:
        self.sent.append(count)
        if self._hook is not None:
            self._hook(count)


async def _send(sender: XReplySender, bot: BotSettings, replies: list[Reply], **kwargs: Any) -> int:
    return await sender.send_replies(bot, USER_ID, CONVERSATION, replies, **kwargs)


# -- text ----------------------------------------------------------------------------------


async def test_text_reply_is_one_dm_from_the_bot(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX, dm_api: DmApi
) -> None:
    assert await _send(sender, bot_a, [TextReply("Hello Alice!")]) == 1

    [dm] = fake_x.sent_dms()
    assert (dm.kind, dm.user_id, dm.recipient_id, dm.text) == (
        _dm_kind(dm_api),
        BOT_A_ID,
        USER_ID,
        "Hello Alice!",
    )
    assert dm.quick_replies is None
    assert dm.media_id is None


async def test_v11_quick_replies_are_native_options(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX, offered: OfferedOptions
) -> None:
    await _send(make_sender("v1.1"), bot_a, [TextReply("What next?", OPTIONS)])

    [dm] = fake_x.sent_dms()
    assert dm.text == "What next?"
    assert dm.quick_replies == (
        {"label": "Order status", "description": "Track a parcel", "metadata": "status"},
        {"label": "Talk to a human", "description": "A person answers", "metadata": "human"},
    )
    assert offered.resolve(CONVERSATION, "2") is None


async def test_v11_descriptions_are_dropped_unless_every_option_has_one(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX
) -> None:
    options = (
        QuickReply("Order status", "Track a parcel", "status"),
        QuickReply("Human", None, ""),
    )

    await _send(make_sender("v1.1"), bot_a, [TextReply("What next?", options)])

    [dm] = fake_x.sent_dms()
    assert dm.quick_replies == (
        {"label": "Order status", "metadata": "status"},
        {"label": "Human", "metadata": ""},
    )


async def test_v2_quick_replies_become_a_remembered_numbered_list(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX, offered: OfferedOptions
) -> None:
    options = (
        QuickReply("Order status", "Track a parcel", "status"),
        QuickReply("Human", None, "h"),
    )

    await _send(make_sender("v2"), bot_a, [TextReply("What next?", options)])

    [dm] = fake_x.sent_dms()
    assert dm.kind == EndpointKind.DM_V2
    assert dm.text == "What next?\n\n1. Order status — Track a parcel\n2. Human"
    assert offered.resolve(CONVERSATION, "2") == "h"
    assert offered.resolve(CONVERSATION, "order status") == "status"


async def test_v2_text_without_options_keeps_the_offered_list(
    make_sender: SenderFactory, bot_a: BotSettings, offered: OfferedOptions
) -> None:
    sender = make_sender("v2")
    await _send(sender, bot_a, [TextReply("Pick one", OPTIONS), TextReply("Take your time.")])

    assert offered.resolve(CONVERSATION, "1") == "status"


async def test_v2_a_failed_list_is_not_remembered(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX, offered: OfferedOptions
) -> None:
    fake_x.fail_next(EndpointKind.DM_V2, 503, v2_problem("Service Unavailable", "busy", 503))

    with pytest.raises(ReplySendError):
        await _send(make_sender("v2"), bot_a, [TextReply("Pick one", OPTIONS)])

    assert offered.resolve(CONVERSATION, "1") is None


async def test_long_text_is_split_on_words_with_quick_replies_on_the_last(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX
) -> None:
    words = [f"w{i:05d}" for i in range(25_000 // 7 + 1)]
    text = " ".join(words)[:25_000].rstrip()

    await _send(make_sender("v1.1"), bot_a, [TextReply(text, OPTIONS)])

    dms = fake_x.sent_dms()
    assert len(dms) == 3
    texts = [dm.text or "" for dm in dms]
    assert all(0 < len(chunk) <= MAX_DM_CHARS for chunk in texts)
    assert " ".join(texts) == text
    assert all(chunk.split(" ")[-1] in words for chunk in texts[:-1])
    assert [dm.quick_replies is not None for dm in dms] == [False, False, True]


async def test_v2_long_text_gets_the_list_on_the_last_dm(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX, offered: OfferedOptions
) -> None:
    text = "word " * 5_000  # 25,000 characters

    await _send(make_sender("v2"), bot_a, [TextReply(text, OPTIONS)])

    texts = [dm.text or "" for dm in fake_x.sent_dms()]
    assert len(texts) == 3
    assert all(len(chunk) <= MAX_DM_CHARS for chunk in texts)
    assert texts[-1].endswith("\n\n" + numbered_list(OPTIONS))
    assert "1. " not in "".join(texts[:-1])
    assert offered.resolve(CONVERSATION, "2") == "human"


def test_numbered_list_goes_to_its_own_dm_when_the_text_is_full() -> None:
    text = "x" * (MAX_DM_CHARS - 5)

    assert with_numbered_list(text, OPTIONS) == [text, numbered_list(OPTIONS)]
    assert with_numbered_list("Hi", ()) == ["Hi"]


def test_split_text_cuts_long_words_hard_and_never_yields_empty_chunks() -> None:
    assert split_text("a" * 25, limit=10) == ["a" * 10, "a" * 10, "a" * 5]
    assert split_text("   " + "b" * 12, limit=10) == ["   " + "b" * 7, "b" * 5]
    assert split_text("one two three", limit=7) == ["one two", "three"]
    assert split_text("one\n\ntwo  three", limit=8) == ["one\n\ntwo", "three"]
    assert split_text("") == [""]
    assert split_text("short") == ["short"]


# -- media ---------------------------------------------------------------------------------


async def test_image_is_downloaded_uploaded_and_attached(
    sender: XReplySender,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
    dm_api: DmApi,
) -> None:
    reply = MediaReply("image", media_url("map.png"), text="Our shop", alt_text="Map")

    await _send(sender, bot_a, [reply])

    [dm] = fake_x.sent_dms()
    assert (dm.kind, dm.user_id, dm.text) == (_dm_kind(dm_api), BOT_A_ID, "Our shop")
    assert dm.media_id is not None
    media = fake_x.media[dm.media_id]
    assert media.data == PNG
    assert (media.owner_id, media.media_type, media.media_category) == (
        BOT_A_ID,
        "image/png",
        "dm_image",
    )


async def test_gif_without_text_is_sent_without_text(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX, media_url: Callable[[str], str]
) -> None:
    await _send(sender, bot_a, [MediaReply("gif", media_url("anim.gif"))])

    [dm] = fake_x.sent_dms()
    # v1.1 requires message_data.text (empty is fine); v2 leaves "text" out beside media.
    assert dm.text == ("" if dm.api_version == "1.1" else None)
    assert dm.media_id is not None
    media = fake_x.media[dm.media_id]
    assert (media.data, media.media_type, media.media_category) == (GIF, "image/gif", "dm_gif")


async def test_video_is_uploaded_in_chunks(
    make_sender: SenderFactory,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
) -> None:
    sender = make_sender("v1.1", upload_chunk_size=UPLOAD_CHUNK)

    await _send(sender, bot_a, [MediaReply("video", media_url("clip.mp4"), "Clip")])

    [dm] = fake_x.sent_dms()
    assert dm.media_id is not None
    appends = fake_x.calls_of(EndpointKind.MEDIA_APPEND, user_id=BOT_A_ID)
    assert [call.segment_index for call in appends] == [0, 1, 2]
    assert {call.media_id for call in appends} == {dm.media_id}
    media = fake_x.media[dm.media_id]
    assert (media.data == VIDEO, media.media_type, media.media_category) == (
        True,
        "video/mp4",
        "dm_video",
    )


async def test_media_type_is_guessed_from_the_extension(
    make_sender: SenderFactory,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
) -> None:
    await _send(make_sender(), bot_a, [MediaReply("image", media_url("raw/photo.png"))])

    [dm] = fake_x.sent_dms()
    assert dm.media_id is not None
    assert fake_x.media[dm.media_id].media_type == "image/png"


async def test_redirects_to_http_are_followed(
    make_sender: SenderFactory,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
) -> None:
    await _send(make_sender(), bot_a, [MediaReply("image", media_url("redirect"))])

    [dm] = fake_x.sent_dms()
    assert dm.media_id is not None
    assert fake_x.media[dm.media_id].data == PNG


async def test_failed_download_sends_the_text_alone_with_a_warning(
    sender: XReplySender,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
    media_server: TestServer,
) -> None:
    url = media_url("missing.png") + "?sig=very-secret-signature"

    with capture_logs() as logs:
        await _send(sender, bot_a, [MediaReply("image", url, text="Our shop")])

    [dm] = fake_x.sent_dms()
    assert (dm.text, dm.media_id) == ("Our shop", None)
    assert fake_x.calls_of(EndpointKind.MEDIA_INIT) == []
    [warning] = [entry for entry in logs if entry["event"] == "bridge.media_download_failed"]
    assert warning["log_level"] == "warning"
    assert (warning["host"], warning["kind"], warning["reason"]) == (
        media_server.host,
        "image",
        "HTTP 404",
    )
    assert "very-secret-signature" not in repr(logs)


@pytest.mark.parametrize(
    "case",
    [
        ("big.png", "larger than 10000 bytes"),
        ("big-stream.png", "larger than 10000 bytes"),
        ("empty.png", "empty body"),
        ("slow.png", "timed out after 0.1 s"),
        ("redirect-ftp", "redirect to a non-http(s) URL"),
        ("loop", "more than 5 redirects"),
    ],
    ids=lambda case: case[0],
)
async def test_unusable_files_are_skipped(
    make_sender: SenderFactory,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
    case: tuple[str, str],
) -> None:
    path, reason = case
    sender = make_sender(download_timeout=0.1 if path == "slow.png" else 30.0)

    with capture_logs() as logs:
        await _send(sender, bot_a, [MediaReply("image", media_url(path), text="Caption")])

    assert [(dm.text, dm.media_id) for dm in fake_x.sent_dms()] == [("Caption", None)]
    [warning] = [entry for entry in logs if entry["event"] == "bridge.media_download_failed"]
    assert warning["reason"] == reason


async def test_unreachable_host_is_a_failed_download(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX, unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/map.png"

    with capture_logs() as logs:
        await _send(make_sender(), bot_a, [MediaReply("image", url, text="Caption")])

    assert [dm.text for dm in fake_x.sent_dms()] == ["Caption"]
    [warning] = [entry for entry in logs if entry["event"] == "bridge.media_download_failed"]
    assert warning["reason"].startswith("network error: ")


async def test_failed_download_without_text_sends_nothing_but_counts_as_sent(
    make_sender: SenderFactory,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
) -> None:
    progress = Progress()

    await _send(make_sender(), bot_a, [MediaReply("image", media_url("big.png"))], on_sent=progress)

    assert fake_x.sent_dms() == []
    assert progress.sent == [1]


async def test_refused_media_id_is_uploaded_again_once(
    sender: XReplySender,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
    dm_api: DmApi,
) -> None:
    fake_x.fail_next(_dm_kind(dm_api), 400, v11_error(324, "The validation of media ids failed."))

    await _send(sender, bot_a, [MediaReply("image", media_url("map.png"), text="Our shop")])

    inits = fake_x.calls_of(EndpointKind.MEDIA_INIT)
    assert len(inits) == 2
    [dm] = fake_x.sent_dms()
    assert dm.media_id == inits[1].media_id
    assert fake_x.media[inits[1].media_id or ""].data == PNG


async def test_media_id_refused_twice_raises(
    make_sender: SenderFactory,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
) -> None:
    fake_x.fail_next(EndpointKind.DM_V11, 400, v11_error(325, "Media not found."), times=2)

    with pytest.raises(ReplySendError) as caught:
        await _send(make_sender(), bot_a, [MediaReply("image", media_url("map.png"))])

    assert caught.value.sent == 0
    assert isinstance(caught.value.cause, XBadMedia)
    assert not caught.value.retryable
    assert len(fake_x.calls_of(EndpointKind.MEDIA_INIT)) == 2
    assert fake_x.sent_dms() == []


async def test_failed_upload_raises(
    make_sender: SenderFactory,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
) -> None:
    fake_x.fail_next(EndpointKind.MEDIA_APPEND, 503, v11_error(130, "Over capacity"))

    with pytest.raises(ReplySendError) as caught:
        await _send(make_sender(), bot_a, [MediaReply("image", media_url("map.png"), "Shop")])

    assert isinstance(caught.value.cause, XServerError)
    assert caught.value.retryable
    assert fake_x.sent_dms() == []


# -- typing, read receipts -----------------------------------------------------------------


async def test_typing_reply_uses_the_v11_endpoint_on_both_apis(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX
) -> None:
    await _send(sender, bot_a, [TypingReply()])

    [call] = fake_x.calls_of(EndpointKind.INDICATE_TYPING)
    assert (call.user_id, call.recipient_id) == (BOT_A_ID, USER_ID)
    assert fake_x.sent_dms() == []


async def test_a_failing_typing_reply_does_not_stop_the_replies(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX
) -> None:
    fake_x.fail_next(EndpointKind.INDICATE_TYPING, 503, v11_error(130, "Over capacity"))
    progress = Progress()

    with capture_logs() as logs:
        await _send(make_sender(), bot_a, [TypingReply(), TextReply("Hi")], on_sent=progress)

    assert [dm.text for dm in fake_x.sent_dms()] == ["Hi"]
    assert progress.sent == [1, 2]
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "bridge.typing_failed"
    ]


async def test_mark_read_and_typing_as_the_bot(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX
) -> None:
    await sender.mark_read(bot_a, USER_ID, "1494419467836000004")
    await sender.typing(bot_a, USER_ID)

    read, typing = fake_x.calls
    assert (read.kind, read.user_id, read.recipient_id, read.last_read_event_id) == (
        EndpointKind.MARK_READ,
        BOT_A_ID,
        USER_ID,
        "1494419467836000004",
    )
    assert (typing.kind, typing.user_id, typing.recipient_id) == (
        EndpointKind.INDICATE_TYPING,
        BOT_A_ID,
        USER_ID,
    )


async def test_mark_read_and_typing_raise_x_errors(
    make_sender: SenderFactory, bot_a: BotSettings, fake_x: FakeX
) -> None:
    sender = make_sender()
    fake_x.fail_next(EndpointKind.MARK_READ, 403, v11_error(349, "You cannot send messages"))
    fake_x.fail_next(EndpointKind.INDICATE_TYPING, 503, v11_error(130, "Over capacity"))

    with pytest.raises(XForbidden):
        await sender.mark_read(bot_a, USER_ID, "1494419467836000004")
    with pytest.raises(XServerError):
        await sender.typing(bot_a, USER_ID)


# -- order, progress, failures -------------------------------------------------------------


def _kinds(calls: list[XCall]) -> list[str]:
    wanted = {
        EndpointKind.DM_V11,
        EndpointKind.DM_V2,
        EndpointKind.INDICATE_TYPING,
        EndpointKind.MEDIA_INIT,
    }
    return [str(call.kind) for call in calls if call.kind in wanted]


async def test_mixed_replies_go_out_in_order(
    sender: XReplySender,
    bot_a: BotSettings,
    fake_x: FakeX,
    media_url: Callable[[str], str],
    dm_api: DmApi,
) -> None:
    replies: list[Reply] = [
        TextReply("Hello Alice!"),
        MediaReply("image", media_url("map.png"), text="Our shop"),
        TypingReply(),
        TextReply("What next?", OPTIONS),
    ]
    progress = Progress()

    assert await _send(sender, bot_a, replies, on_sent=progress) == 4

    dm = str(_dm_kind(dm_api))
    assert _kinds(fake_x.calls) == [dm, "media_init", dm, "indicate_typing", dm]
    texts = [(dm.text or "").split("\n")[0] for dm in fake_x.sent_dms()]
    assert texts == ["Hello Alice!", "Our shop", "What next?"]
    assert progress.sent == [1, 2, 3, 4]


async def test_start_at_skips_replies_already_sent(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX
) -> None:
    replies: list[Reply] = [TextReply("one"), TextReply("two"), TextReply("three")]
    progress = Progress()

    assert await _send(sender, bot_a, replies, start_at=1, on_sent=progress) == 3

    assert [dm.text for dm in fake_x.sent_dms()] == ["two", "three"]
    assert progress.sent == [2, 3]


async def test_start_at_the_end_sends_nothing(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX
) -> None:
    assert await _send(sender, bot_a, [TextReply("one")], start_at=1) == 1
    assert fake_x.calls == []
    with pytest.raises(ValueError, match="start_at"):
        await _send(sender, bot_a, [TextReply("one")], start_at=2)


async def test_forbidden_on_the_second_reply_stops_there(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX, dm_api: DmApi
) -> None:
    def script(count: int) -> None:
        if count == 1:
            body = v11_error(349, "You cannot send messages to this user.")
            fake_x.fail_next(_dm_kind(dm_api), 403, body)

    progress = Progress(script)
    replies: list[Reply] = [TextReply("one"), TextReply("two"), TextReply("three")]

    with pytest.raises(ReplySendError) as caught:
        await _send(sender, bot_a, replies, on_sent=progress)

    assert caught.value.sent == 1
    assert isinstance(caught.value.cause, XForbidden)
    assert caught.value.cause.code == 349
    assert not caught.value.cause.retryable
    assert isinstance(caught.value.__cause__, XError)
    assert [dm.text for dm in fake_x.sent_dms()] == ["one"]
    assert progress.sent == [1]


async def test_over_capacity_is_a_retryable_cause(
    sender: XReplySender, bot_a: BotSettings, fake_x: FakeX, dm_api: DmApi
) -> None:
    fake_x.fail_next(_dm_kind(dm_api), 503, v11_error(130, "Over capacity"))

    with pytest.raises(ReplySendError) as caught:
        await _send(sender, bot_a, [TextReply("one"), TextReply("two")])

    assert caught.value.sent == 0
    assert isinstance(caught.value.cause, XServerError)
    assert caught.value.retryable
    assert fake_x.sent_dms() == []


async def test_a_failing_on_sent_propagates_as_is(sender: XReplySender, bot_a: BotSettings) -> None:
    async def broken(count: int) -> None:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError, match="store down"):
        await _send(sender, bot_a, [TextReply("one")], on_sent=broken)


async def test_each_bot_sends_under_its_own_credentials(
    sender: XReplySender, bot_a: BotSettings, bot_b: BotSettings, fake_x: FakeX
) -> None:
    await _send(sender, bot_a, [TextReply("from a")])
    await _send(sender, bot_b, [TextReply("from b")])

    assert [dm.text for dm in fake_x.sent_dms(BOT_A_ID)] == ["from a"]
    assert [dm.text for dm in fake_x.sent_dms(BOT_B_ID)] == ["from b"]
    assert fake_x.rejections == []


async def test_each_dm_is_logged_without_secrets(
    sender: XReplySender, bot_a: BotSettings, user_a: FakeXUser, fake_x: FakeX
) -> None:
    with capture_logs() as logs:
        await _send(sender, bot_a, [TypingReply(), TextReply("Hi")])

    [event] = [entry for entry in logs if entry["event"] == "bridge.dm_sent"]
    [dm] = fake_x.sent_dms()
    assert (event["bot_id"], event["conversation_id"], event["reply_index"]) == (
        "bot-a",
        CONVERSATION,
        1,
    )
    assert (event["kind"], event["event_id"]) == ("text", dm.event_id)
    assert user_a.token not in repr(logs)
    assert user_a.secret not in repr(logs)


def test_media_limits_from_settings() -> None:
    limits = MediaLimits.from_settings(MessagingSettings())

    assert limits.for_kind("image") == 5 * 1024 * 1024
    assert limits.for_kind("gif") == 15 * 1024 * 1024
    assert limits.for_kind("video") == 25 * 1024 * 1024
