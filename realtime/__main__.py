"""``python -m realtime`` is the ``realtime`` command."""

import sys

from realtime.cli import main

sys.exit(main())
