"""What the project's commands share in their argument parsing: ``--help`` with defaults.

``cocoon-operator`` and ``kubectl cocoon`` build their parsers from :class:`Parser`;
sub-commands made with ``add_subparsers`` are of the same class, so every one of
them shows its defaults, wherever the sub-command is defined.
"""

from __future__ import annotations

import argparse
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when there is a default to tell.

    Left out: positional arguments, flags (default False), options without a
    default (None, an empty list) and help texts that already speak of their
    default, which say it better (``default: $KUBECONFIG or in-cluster``).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or "default" in text or _untold(action.default):
            return text
        return f"{text} (default: %(default)s)"


def positive_seconds(text: str) -> float:
    """An option's type for a duration in seconds that must be more than none (a
    heartbeat of zero would have its agent write without pause)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _untold(default: object) -> bool:
    """No default worth showing (by identity: 0 is a default to tell, False is not)."""
    return default is None or default is False or default == [] or default is argparse.SUPPRESS


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help (and whose sub-commands' help) shows defaults.

    A sub-command that asks for another formatter (``RawDescriptionHelpFormatter``
    for a description laid out by hand) gets it with the defaults added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        chosen = kwargs.get("formatter_class", HelpFormatter)
        if not issubclass(chosen, HelpFormatter):
            chosen = type(f"{chosen.__name__}WithDefaults", (HelpFormatter, chosen), {})
        kwargs["formatter_class"] = chosen
        super().__init__(*args, **kwargs)
