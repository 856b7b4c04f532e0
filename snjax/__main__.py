"""``python -m snjax``: the ``snjax`` command line (:mod:`snjax.app.cli`)."""

import sys

from snjax.app.cli import main

sys.exit(main())
