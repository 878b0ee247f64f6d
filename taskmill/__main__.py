"""``python -m taskmill``: the same as the ``taskmill`` command."""

import sys

from taskmill.cli import main

sys.exit(main())
