"""The Store actor's room: the only owner of the SQLite database, and everything it needs."""
