"""``python -m grukit.cli``: the same as the ``grukit`` command."""

import sys

from grukit.cli import main

sys.exit(main())
