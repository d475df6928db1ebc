"""``python -m twitter_bot``."""

import sys

from twitter_bot.cli import main

sys.exit(main())
