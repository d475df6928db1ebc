"""Chunked media upload: INIT, several APPENDs, FINALIZE and STATUS polling."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.fake_x import EndpointKind, FakeX, MediaProcessing
from tests.x.conftest import BOT_A_ID, USER_ID
from twitter_bot.x import XBadMedia, XClient, XCredentials, XMediaProcessingError

DATA = bytes(range(256)) * 10


class RecordingSleep:
    """Stands in for asyncio.sleep: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_upload_in_several_segments(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    media_id = await client.upload_media(creds_a, DATA, "image/png", "dm_image", chunk_size=1000)

    media = fake_x.media[media_id]
    assert media.data == DATA
    assert (media.owner_id, media.media_type, media.media_category) == (
        BOT_A_ID,
        "image/png",
        "dm_image",
    )
    [init] = fake_x.calls_of(EndpointKind.MEDIA_INIT)
    assert init.payload["shared"] == "true"
    assert init.payload["total_bytes"] == str(len(DATA))
    appends = fake_x.calls_of(EndpointKind.MEDIA_APPEND, user_id=BOT_A_ID)
    assert [call.segment_index for call in appends] == [0, 1, 2]
    assert len(fake_x.calls_of(EndpointKind.MEDIA_FINALIZE)) == 1
    assert fake_x.calls_of(EndpointKind.MEDIA_STATUS) == []


async def test_pending_processing_is_polled_after_check_after_secs(
    make_client: Callable[..., XClient], fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.media_processing = MediaProcessing(in_progress_polls=2, check_after_secs=3)
    sleep = RecordingSleep()
    client = make_client(sleep=sleep)

    media_id = await client.upload_media(creds_a, DATA, "video/mp4", "dm_video", chunk_size=1024)

    assert sleep.delays == [3.0, 3.0, 3.0]
    assert len(fake_x.calls_of(EndpointKind.MEDIA_STATUS)) == 3
    assert fake_x.media[media_id].state == "succeeded"
    await client.send_dm_v11(creds_a, USER_ID, "video", media_id=media_id)


async def test_failed_processing_raises(
    make_client: Callable[..., XClient], fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.media_processing = MediaProcessing(in_progress_polls=0, final_state="failed")
    client = make_client(sleep=RecordingSleep())

    with pytest.raises(XMediaProcessingError) as caught:
        await client.upload_media(creds_a, DATA, "video/mp4", "dm_video")

    assert not caught.value.timed_out
    assert not caught.value.retryable
    assert "Unsupported video format" in str(caught.value)


async def test_processing_wait_is_capped(
    make_client: Callable[..., XClient], fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.media_processing = MediaProcessing(in_progress_polls=100, check_after_secs=5)
    sleep = RecordingSleep()
    client = make_client(sleep=sleep)

    with pytest.raises(XMediaProcessingError) as caught:
        await client.upload_media(creds_a, DATA, "video/mp4", "dm_video", max_processing_wait=12)

    assert caught.value.timed_out
    assert sleep.delays == [5.0, 5.0]


async def test_media_of_another_account_is_refused(
    client: XClient, creds_a: XCredentials, creds_b: XCredentials
) -> None:
    media_id = await client.upload_media(creds_a, DATA, "image/png", "dm_image")

    with pytest.raises(XBadMedia) as caught:
        await client.send_dm_v11(creds_b, USER_ID, "not mine", media_id=media_id)

    assert caught.value.code == 324
    assert not caught.value.retryable


@pytest.mark.parametrize("chunk_size", [0, 5 * 1024 * 1024 + 1])
async def test_chunk_size_is_bounded(
    client: XClient, creds_a: XCredentials, chunk_size: int
) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        await client.upload_media(creds_a, DATA, "image/png", "dm_image", chunk_size=chunk_size)


async def test_empty_media_is_refused(client: XClient, creds_a: XCredentials) -> None:
    with pytest.raises(ValueError, match="no media"):
        await client.upload_media(creds_a, b"", "image/png", "dm_image")
