"""`python -m serving`: the container's start command (the Dockerfile runs exactly this, and so do the tests)."""

import uvicorn

from serving.app import create_app
from serving.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.port, log_level="warning", access_log=False)  # noqa: S104


if __name__ == "__main__":
    main()
