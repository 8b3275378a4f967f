"""The status pages (SPEC §12): what an operator sees in a browser, read-only.

``data`` reads what each page shows (one read-only transaction per page, every query
filtered by the account the pages are limited to, if any); ``badge`` draws the
heartbeat badge; ``app`` is the WSGI application that checks the token, routes,
and renders the Jinja2 templates in ``schedctl/templates/pages``.
"""
