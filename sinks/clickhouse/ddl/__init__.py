"""Versioned DDL: ``NNNN_name.sql``, applied once each in order by ``sinks.clickhouse.migrate``.

Rules for a file: statements separated by ``;``; ``{db}`` stands for the database; write
every statement so that running it twice is harmless (``IF NOT EXISTS``), because a file
that fails half-way is re-run from its start. Never edit a released file: add the next one.
"""
