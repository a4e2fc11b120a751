"""``python -m shared`` is ``python -m shared.cli``."""

import sys

from shared.cli import main

sys.exit(main())
