"""``python -m app serve|demo-data``."""
from __future__ import annotations

import sys

USAGE = "usage: python -m app serve [--host H] [--port N] | demo-data --rows N --format csv|parquet|json --out DIR"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("serve", [])
    if command == "serve":
        from .server import serve

        return serve(rest)
    if command == "demo-data":
        from .demo import demo_data_cli

        return demo_data_cli(rest)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
