"""Running the server as a program: settings (``settings``), logging (``logs``),
foreground and daemon processes and their pidfiles (``daemon``), bitbake's cooker
integration (``cooker``) and the CPU priority of copies (``priority``)."""
