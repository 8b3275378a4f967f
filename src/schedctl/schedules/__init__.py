"""Schedules and their runs (SPEC §3, §4).

- ``model``: a schedule as stored and its options, parsed and checked (pure).
- ``store``: creating, reading and changing schedules in the database.
- ``catchup``: which missed slots a schedule runs after downtime (pure).
- ``runs``: materialising due runs, executing them, manual runs and history.
- ``reports``: report kinds, the built-in ``sql`` kind and its plugins' interface.
"""
