"""``python -m qzoo``: the same as the ``qzoo`` console script."""

import sys

from .cli import main

sys.exit(main())
