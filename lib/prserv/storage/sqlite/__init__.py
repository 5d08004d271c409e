"""The SQLite engine, split by job: ``schema`` (tables and index), ``connection``
(opening a file), ``cache`` (package states), ``transactions`` (write transactions,
group commit), ``checkpoint`` (the write-ahead log), ``migrate`` (tables of bitbake
<= 2.8), ``backup`` (snapshots, copies, restores), ``database`` (one file) and
``engine`` (one table behind ``storage.Engine``)."""
