"""``python -m gpudiff`` is the ``gpudiff`` command."""

import sys

from .cli import main

sys.exit(main())
