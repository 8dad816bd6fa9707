"""``python -m statestore.cli``: the ``statestore`` command."""

import sys

from . import main

sys.exit(main())
