"""The bitbake prserv API version this package implements.

bitbake's own ``bin/bitbake-prserv`` refuses to run when its version string differs
from ``prserv.__version__``, and exports report it as ``core_ver``; ship our
``bin/bitbake-prserv`` together with ``lib/prserv``.
"""

__version__ = "2.19.0"
