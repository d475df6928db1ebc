"""The sandbox end to end from a real browser: Debian's headless Chromium driven by Playwright.

The page is served by the sandbox in this process; the daemon behind it is the real
one (webhook, embedded queue, bridge, X client, gateway client), X is the stand-in
and the bot is the built-in echo bot. Nothing is mocked between the page and them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.sandbox.conftest import ECHO_BOT, SHOP_BOT, RunningSandbox
from twitter_bot.sandbox.fake_x import EndpointKind
from twitter_bot.sandbox.picture import sandbox_picture

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Set to a path to keep a screenshot of the page after the conversation.
SCREENSHOT_ENV = "SANDBOX_SCREENSHOT"


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1440, "height": 960},
        )
        try:
            context.set_default_timeout(15_000)
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


async def _say(page: Page, text: str) -> None:
    await page.locator("#text").fill(text)
    await page.locator("#text").press("Enter")


def _bot_bubbles(page: Page):  # type: ignore[no-untyped-def]
    return page.locator(".msg.bot .bubble")


@pytest.mark.timeout(120)
async def test_chat_with_the_echo_bot_in_a_real_browser(
    page: Page, running: RunningSandbox
) -> None:
    sandbox = running.sandbox
    await page.goto(running.url)
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(page.locator("#crc")).to_contain_text("CRC ✓")

    # Pick a bot account: the second one, so picking is what selects it.
    await page.locator(f'.bot[data-user-id="{SHOP_BOT}"]').click()
    await expect(page.locator("#head-name")).to_have_text("shop-bot")

    # A message and its echo.
    await _say(page, "hello sandbox")
    await expect(page.locator(".msg.user .bubble").last).to_have_text("hello sandbox")
    await expect(_bot_bubbles(page).last).to_have_text("echo: hello sandbox")

    # Quick replies: ask for the menu, tap an option; the echo shows its payload.
    await _say(page, "menu")
    options = page.locator("#quick-replies .quick-reply")
    await expect(options).to_have_count(3)
    await options.filter(has_text="Say hello").click()
    await expect(_bot_bubbles(page).last).to_have_text("echo: Say hello [payload: hello]")
    await expect(page.locator(".msg.user .tapped").last).to_contain_text('payload "hello"')
    await expect(options).to_have_count(0)  # answered: X hides the options

    # An image: downloaded by the bridge, uploaded to the stand-in in chunks, shown from it.
    await _say(page, "picture")
    image = page.locator(".msg.bot img").last
    await expect(image).to_be_visible()
    await page.wait_for_function(
        "() => { const i = [...document.querySelectorAll('.msg.bot img')].pop();"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert await image.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [320, 200]

    # The typing indicator shows while the bot thinks, and goes with its answer.
    await _say(page, "slow")
    await expect(page.locator("#typing")).to_be_visible()
    await expect(_bot_bubbles(page).last).to_have_text("echo: slow")
    await expect(page.locator("#typing")).to_have_count(0)

    # The trip panel: the first message was accepted, queued, sent to the gateway, answered.
    trip = page.locator(".trip", has_text="hello sandbox")
    for step in ("accepted", "queued", "read", "typing", "gateway", "sent", "echo"):
        await expect(trip.locator(f'.step[data-step="{step}"]')).to_have_count(1)
    await expect(trip.locator(".step.bad")).to_have_count(0)
    await expect(trip.locator('.step[data-step="accepted"]')).to_contain_text("webhook 200")
    await expect(trip.locator('.step[data-step="gateway"]')).to_contain_text("200 in")
    await expect(trip.locator('.step[data-step="sent"]')).to_contain_text("echo: hello sandbox")
    picture_trip = page.locator(".trip", has_text="“picture”")
    await expect(picture_trip.locator('.step[data-step="media"]')).to_contain_text("image/png")

    if os.environ.get(SCREENSHOT_ENV):
        await page.screenshot(path=os.environ[SCREENSHOT_ENV])

    # Each bot has its own conversation.
    await page.locator(f'.bot[data-user-id="{ECHO_BOT}"]').click()
    await expect(page.locator("#head-name")).to_have_text("echo-bot")
    await expect(page.locator(".msg")).to_have_count(0)

    # Behind the page: every DM was signed as the shop bot and sent to the page's user,
    # and X's media store holds exactly the echo bot's picture.
    dms = sandbox.x.sent_dms()
    assert [dm.text for dm in dms] == [
        "echo: hello sandbox",
        "echo: menu\nPick one:",
        "echo: Say hello [payload: hello]",
        "echo: picture",
        "echo: slow",
    ]
    assert {(dm.user_id, dm.recipient_id) for dm in dms} == {(SHOP_BOT, sandbox.user.user_id)}
    assert dms[1].quick_replies is not None and len(dms[1].quick_replies) == 3
    [media] = sandbox.x.media.values()
    assert media.data == sandbox_picture() and media.owner_id == SHOP_BOT
    assert sandbox.x.calls_of(EndpointKind.MEDIA_APPEND)
    assert sandbox.x.rejections == []
