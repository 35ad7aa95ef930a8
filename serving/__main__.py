"""`python -m serving`: the container's start command (the Dockerfile runs exactly this, and so do the tests)."""

import sys

import uvicorn

from serving.app import create_app
from serving.protocol import with_header_timeout
from serving.settings import Settings, SettingsError


def main() -> int:
    from common.quiet import quiet

    quiet()  # one JSON line per request in the container's log, not library progress bars
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"error: bad server setting: {e}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning", access_log=False,
                http=with_header_timeout(settings.header_timeout_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
