"""Errors raised by the bridge: each names the file, key or step that is wrong."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error the bridge raises on bad input; CLIs print it and exit 2."""


class FormatError(BridgeError):
    """A run directory, manifest or tensor file is missing, corrupt or of an unknown version."""


class SubsetError(BridgeError):
    """An annotation file or a requested image id cannot be used to cut a subset."""


class ConversionError(BridgeError):
    """A checkpoint or a rule set cannot be converted as asked."""
