"""Baseline (a): a bare aiohttp handler that only answers 200.

.venv/bin/python bench/bare_server.py PORT
"""

import sys

from aiohttp import web


async def deliver(request: web.Request) -> web.Response:
    return web.Response(text="ok")


app = web.Application()
app.router.add_post("/webhooks", deliver)
app.router.add_get("/health/ready", deliver)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
