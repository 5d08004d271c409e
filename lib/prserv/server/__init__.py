"""The PR server: sessions and their request handlers (``session``, with field checks
in ``fields``), the allocator that decides values (``allocator``), the upstream
pool (``upstream``), dump streaming (``dump``), the mirror's follower (``mirror``)
and the server itself (``prserver``)."""
