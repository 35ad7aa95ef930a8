"""The one error base the `llmops` CLI catches: a KitError's message says what went wrong and what to do, so the user
sees it in one line and no traceback. Every module's user-facing error derives from it."""


class KitError(Exception):
    """An error the user can act on; its message names the file, setting or resource, and what to do."""


# What reading back a file that parsed can raise where a hand edit broke it: a key gone, text where a table or number was.
HAND_EDIT_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError)


def unparsable(e: BaseException) -> str:
    """Why text did not parse, in words a user can act on (a RecursionError's own message says nothing)."""
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)


def hand_edit(e: BaseException) -> str:
    """What a hand edit broke, from the error reading the file back raised: `missing 'key'`, or the error itself."""
    return f"missing {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {str(e)[:200]}"
