"""The logger every part of the package writes to: bitbake's ``BitBake.PRserv``.

bitbake's cooker and tools configure that logger's handlers and level, so nothing
here adds a handler; only the command line (``prserv.runtime.logs``) does.
"""

import logging

logger = logging.getLogger("BitBake.PRserv")
