"""schedctl: recurring business jobs run from cron, exactly once."""

# Every zone schedctl builds comes from the `tzdata` package, not the host's files.
from schedctl import zones as _zones  # noqa: F401

__version__ = "0.1.0"
