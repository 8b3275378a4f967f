"""Helpers shared by the tests: databases, the CLI runners, servers on loopback, worlds.

Fixtures built on them live in ``tests/conftest.py``; test modules import the rest
(``from support.delivery import message``).
"""
