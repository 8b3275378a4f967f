"""schedctl: recurring business jobs run from cron, exactly once."""

__version__ = "0.1.0"
