"""`digest`: each opted-in user's daily digest, once per local day (SPEC §5).

- ``due``: when a user's digest is due (pure).
- ``plan``: finding due users and claiming their days, set-based.
- ``compose``: building one digest's mail (pure).
- ``run``: one `digest` run, page by page, and its preview.
"""
