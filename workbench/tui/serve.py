"""`genwb serve`: the app in a web browser through textual-serve; each browser tab runs
`genwb --runs RUNS` in its own process."""
from __future__ import annotations

import shlex
import sys

from workbench.errors import UserError


def serve(runs_dir: str, host: str, port: int, echo=print) -> None:
    """Serve the app on host:port until interrupted; a missing textual-serve is a UserError."""
    try:
        from textual_serve.server import Server
    except ImportError:
        raise UserError("genwb serve needs textual-serve: pip install textual-serve") from None
    # Half-cell images are text, so a browser shows them; Kitty and Sixel graphics it cannot.
    command = shlex.join([sys.executable, "-m", "workbench.cli", "--runs", str(runs_dir), "--image-protocol", "halfcell"])
    echo(f"genwb serve: http://{host}:{port} (from another machine: ssh -L {port}:localhost:{port} THIS_HOST)")
    Server(command, host=host, port=port, title="genwb").serve()
