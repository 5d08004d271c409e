"""``python3 -m prserv``: the ``prserv`` command-line client (for a copied ``lib/prserv``)."""

import sys

from .cli.tool import main

sys.exit(main())
