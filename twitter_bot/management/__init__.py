"""Operating X's side of the bridge: the ``twitter-bot webhooks`` commands, and the daemon's
CRC watchdog and gap recovery. Built on the X management client in ``twitter_bot.x.management``.
"""
