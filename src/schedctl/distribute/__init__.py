"""`distribute`: the daily distribution of users to campaigns and groups (SPEC §6).

- ``config``: the ``[distribute]`` settings, parsed and checked at start-up.
- ``plan``: the pure rules: the assignment order, the even split, masking IDs.
- ``store``: the day's plan and progress in schedctl's own database.
- ``endpoints``: reading the source and campaigns, copying to the destinations.
- ``notify``: the operators' mail.
- ``run``: one `distribute` run, and its preview.
"""
