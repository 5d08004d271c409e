"""The command lines: ``bitbake-prserv`` (``bitbake_prserv``) and ``prserv`` (``tool``,
with one module per group of subcommands).  The only part of the package that
prints, reads ``argv`` or chooses exit codes."""
