"""The PostgreSQL engine: several servers on one database (``engine``), its schema
(``schema``) and database URLs (``url``, standard library only).  The driver,
asyncpg, is imported only when a URL is opened (``pip install 'prserv[postgresql]'``)."""
