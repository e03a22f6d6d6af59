"""``python -m pipeline.cli``: the ``bmtl`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
