import sys

from snjax.app.cli import main

sys.exit(main())
