"""``python -m featmatch`` is the ``featmatch`` command."""

import sys

from featmatch.cli import main

sys.exit(main())
