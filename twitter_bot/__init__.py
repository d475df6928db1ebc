"""twitter-bot: X Direct Messages to conversational bots."""
