"""Browser checks of the audit report (``make test-browser``); skipped without a browser."""
