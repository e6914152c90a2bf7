"""The database: engine, sessions, migrations to head, and the tables."""
