"""The one error base the `llmops` CLI catches: a KitError's message says what went wrong and what to do, so the user
sees it in one line and no traceback. Every module's user-facing error derives from it."""


class KitError(Exception):
    """An error the user can act on; its message names the file, setting or resource, and what to do."""
