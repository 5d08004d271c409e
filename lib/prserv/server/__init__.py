"""The PR server: sessions and their request handlers (``session``, with field checks
in ``requests``), the allocator that decides values (``allocator``), the upstream
pool (``upstream``), dump streaming (``dump``) and the server itself (``server``)."""
