"""The SQL of ``prserv_users``: users and their hashed tokens (``prserv.tokens``)."""

COLUMNS = "username, permissions, token_hash, salt, created, expires"
"""In ``tokens.row_of``'s order."""

GET = "SELECT %s FROM prserv_users WHERE username = $1" % COLUMNS
LIST = "SELECT %s FROM prserv_users ORDER BY username" % COLUMNS
PUT = ("INSERT INTO prserv_users (%s) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) "
       "DO UPDATE SET permissions = EXCLUDED.permissions, token_hash = EXCLUDED.token_hash, "
       "salt = EXCLUDED.salt, created = EXCLUDED.created, expires = EXCLUDED.expires" % COLUMNS)
"""An upsert: safe to repeat after an outage."""
REMOVE = "DELETE FROM prserv_users WHERE username = $1"
