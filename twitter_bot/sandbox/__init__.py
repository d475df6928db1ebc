"""``twitter-bot sandbox``: chat with a bot through the real daemon, with X stood in locally.

Nothing in the daemon imports this package; it sits on top, wiring the daemon to a
local X (``fake_x``), a bot (``gateway``) and a chat page (``page``, ``static/``).
"""
