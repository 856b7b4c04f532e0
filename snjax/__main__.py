import sys

from snjax.cli import main

sys.exit(main())
