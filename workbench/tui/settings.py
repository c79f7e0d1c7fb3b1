"""User settings of the app, in the user config file: the terminal image protocol, and the sort
and filter of each list view (kept for the session, and written back to the file).

    ~/.config/genwb/config.toml (or $XDG_CONFIG_HOME/genwb/config.toml):

        [tui]
        image_protocol = "halfcell"   # auto | kitty | sixel | halfcell

        [tui.runs]                    # written by the app when the runs browser's sort or filter changes
        sort = "steps"
        reverse = true
        filter = "vae"

The command line (`genwb --image-protocol ...`) beats the environment variable
GENWB_IMAGE_PROTOCOL, which beats the file; "auto" asks the terminal. A bad value in the file or
the environment costs a one-line warning and falls back to "auto"; a bad value on the command line
is the user's typo right now, so it is a UserError.
"""
from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Callable

from workbench.errors import UserError

PROTOCOLS = ("auto", "kitty", "sixel", "halfcell")
ENV_VAR = "GENWB_IMAGE_PROTOCOL"

_current = "auto"
_views: dict[str, dict] = {}  # this session's view settings, by view name


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


# -- list views: sort and filter -----------------------------------------------------------------
def load_view(view: str, path: str | Path | None = None, warn: Callable[[str], None] = _warn) -> dict:
    """The saved settings of list view ``view`` ("runs", "evaluation"): this session's, else the
    file's ``[tui.<view>]`` table, else {}. Values are str, bool or int; anything else is dropped."""
    if view in _views:
        return dict(_views[view])
    tui = read_config(path, warn).get("tui", {})
    table = tui.get(view, {}) if isinstance(tui, dict) else {}
    if not isinstance(table, dict):
        return {}
    values = {k: v for k, v in table.items() if isinstance(v, (str, bool, int))}
    _views[view] = values
    return dict(values)


def save_view(view: str, values: dict, path: str | Path | None = None, warn: Callable[[str], None] = _warn) -> None:
    """Keep ``values`` for the session and write them to the file's ``[tui.<view>]`` table, leaving
    the rest of the file (comments included) as it was. A file that cannot be written costs one
    warning; the session keeps the values anyway."""
    if _views.get(view) == values:
        return
    _views[view] = dict(values)
    path = Path(path) if path is not None else config_path()
    try:
        text = path.read_text() if path.exists() else ""
        path.parent.mkdir(parents=True, exist_ok=True)
        new = replace_table(text, f"tui.{view}", values)
        tomllib.loads(new)  # never write a file the next start could not read
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new)
        os.replace(tmp, path)
    except (OSError, tomllib.TOMLDecodeError) as e:
        warn(f"{path}: cannot save the {view} view's settings ({getattr(e, 'strerror', None) or e})")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def replace_table(text: str, table: str, values: dict) -> str:
    """``text`` (a TOML file) with table ``[table]`` replaced by ``values`` (appended if absent)."""
    lines = text.splitlines()
    header = f"[{table}]"
    body = [header, *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    start = next((i for i, line in enumerate(lines) if line.strip() == header), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        return "\n".join(lines + body) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():  # keep the blank line before the next table
        end -= 1
    return "\n".join(lines[:start] + body + lines[end:]) + "\n"


def forget_session_views() -> None:
    """Drop this session's view settings (tests; a new session reads the file again)."""
    _views.clear()
