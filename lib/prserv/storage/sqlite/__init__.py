"""The SQLite engine, one job a module:

* ``schema``: bitbake's PR table and this project's value index;
* ``connection``: opening a database file;
* ``errors``: SQLite's errors as prserv's typed errors;
* ``lru``: the byte-budgeted LRU the cache keeps its entries in;
* ``cache``: a table's package states, read on demand and kept coherent;
* ``transactions``: write transactions and group commit;
* ``checkpoint``: the write-ahead log's background checkpoints;
* ``feed``: the change feed of a table (origin or mirror);
* ``users``: the users table;
* ``migrate``: the tables of bitbake <= 2.8;
* ``files``: a database's files on disk;
* ``snapshot``: consistent snapshots of a database in use (a server's ``dump-db``);
* ``backup``: offline backups, restores and their verification;
* ``database``: one open file, shared by its tables' engines;
* ``engine``: one table behind ``storage.Engine``.
"""
