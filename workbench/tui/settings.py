"""User settings of the app: the terminal image protocol, read from the user config file.

    ~/.config/genwb/config.toml (or $XDG_CONFIG_HOME/genwb/config.toml):

        [tui]
        image_protocol = "halfcell"   # auto | kitty | sixel | halfcell

The command line (`genwb --image-protocol ...`) beats the environment variable
GENWB_IMAGE_PROTOCOL, which beats the file; "auto" asks the terminal. A bad value in the file or
the environment costs a one-line warning and falls back to "auto"; a bad value on the command line
is the user's typo right now, so it is a UserError.
"""
from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Callable

from workbench.errors import UserError

PROTOCOLS = ("auto", "kitty", "sixel", "halfcell")
ENV_VAR = "GENWB_IMAGE_PROTOCOL"

_current = "auto"


def _warn(message: str) -> None:
    print(f"genwb: warning: {message}", file=sys.stderr)


def config_path() -> Path:
    """The user config file: $XDG_CONFIG_HOME/genwb/config.toml, else ~/.config/genwb/config.toml."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"  # the XDG spec ignores relative paths
    return root / "genwb" / "config.toml"


def read_config(path: str | Path | None = None, warn: Callable[[str], None] = _warn) -> dict:
    """The user config as a dict; {} when the file is absent, unreadable or not TOML (with a warning)."""
    path = Path(path) if path is not None else config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        warn(f"{path}: cannot read the config file ({e.strerror}); using defaults")
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        warn(f"{path}: not valid TOML ({e}); using defaults")
        return {}


def _checked(value: object, where: str, warn: Callable[[str], None]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in PROTOCOLS:
        return value.strip().lower()
    warn(f"{where}: image_protocol = {value!r} is not one of {', '.join(PROTOCOLS)}; using auto")
    return "auto"


def resolve_image_protocol(cli_value: str | None = None, *, path: str | Path | None = None,
                           warn: Callable[[str], None] = _warn) -> str:
    """The protocol to draw images with: the CLI value, else $GENWB_IMAGE_PROTOCOL, else the file's
    `[tui] image_protocol`, else "auto". Always one of PROTOCOLS."""
    if cli_value is not None:
        if cli_value.strip().lower() not in PROTOCOLS:
            raise UserError(f"--image-protocol {cli_value!r}: choose one of {', '.join(PROTOCOLS)}")
        return cli_value.strip().lower()
    from_env = _checked(os.environ.get(ENV_VAR) or None, f"${ENV_VAR}", warn)
    if from_env is not None:
        return from_env
    config = read_config(path, warn)
    tui = config.get("tui", {})
    if not isinstance(tui, dict):
        warn(f"{path or config_path()}: [tui] must be a table; using auto")
        return "auto"
    return _checked(tui.get("image_protocol"), str(path or config_path()), warn) or "auto"


def use_image_protocol(protocol: str) -> None:
    """Make ``protocol`` the default of every ImageGrid created from now on. The app calls this
    once, before Textual starts: with "auto", textual-image asks the terminal now, while it can."""
    global _current
    if protocol not in PROTOCOLS:
        raise UserError(f"image protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    _current = protocol
    from workbench.tui.widgets.image_grid import prepare

    prepare(protocol)


def image_protocol() -> str:
    """The protocol ImageGrid widgets use when not told otherwise."""
    return _current
