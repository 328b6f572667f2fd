"""Errors the command line turns into a one-line message instead of a traceback."""


class OneshotError(Exception):
    """Bad input or a missing resource, with a message meant for the user."""


class DataError(OneshotError):
    """A dataset is missing, corrupt, or has the wrong structure."""


class ConfigError(OneshotError, ValueError):
    """A config, preset or request names something unknown or impossible."""


class TrainingError(OneshotError):
    """Training cannot go on (a NaN or infinite loss, an incompatible run directory)."""
