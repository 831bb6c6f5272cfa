"""exactcron: POP-before-SMTP relay control from cron, without a daemon."""

__version__ = "0.2.0"
