"""What `schedctl config check` verifies (SPEC §12, §13): each check answers
warnings and errors as one line each, and writes nothing."""

from __future__ import annotations

from schedctl.config import Settings
from schedctl.errors import SchedctlError


def check_installation(settings: Settings) -> tuple[list[str], list[str]]:
    """(warnings, errors) for this configuration and its database."""
    from schedctl.db.database import Database
    from schedctl.db.migrations import check_schema
    from schedctl.schedules import reports

    warnings: list[str] = []
    errors: list[str] = []
    queries = reports.report_queries(settings)
    try:
        with Database(settings.database_url, create=False, retry_seconds=0) as db:
            check_schema(db)
            unscoped = db.transaction(reports.unscoped_reason, read_only=True)
    except SchedctlError as exc:
        errors.append(settings.redact(exc.message))
        return warnings, errors
    if unscoped is not None:
        own = sorted(name for name, q in queries.items() if q.database_url is None)
        if own:
            errors.append(
                f"{reports.TENANCY_UNSAFE}: report queries on schedctl's own database"
                f" ({', '.join(own)}) will be refused: {unscoped}; use PostgreSQL with a"
                " login role that is neither a superuser nor BYPASSRLS"
                " (README, Tenancy and its limits)"
            )
        else:
            warnings.append(
                f"accounts are not kept apart by the database: {unscoped}"
                " (README, Tenancy and its limits)"
            )
    return warnings, errors
