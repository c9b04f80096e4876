"""``python -m bot`` is ``readybot``."""

import sys

from bot.cli import main

sys.exit(main())
