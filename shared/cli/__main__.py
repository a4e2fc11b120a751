"""``python -m shared.cli`` is ``psaudit``."""

import sys

from shared.cli.main import main

sys.exit(main())
