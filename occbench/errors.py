"""Library errors. The CLI turns every OccbenchError into a click.ClickException."""


class OccbenchError(Exception):
    """Base class for errors a user can fix; the message says how."""


class DataNotFoundError(OccbenchError):
    """A dataset, file or protocol input is missing."""


class UnsafePathError(OccbenchError):
    """A path read from a manifest or protocol escapes its root."""


class UnsafeLoadError(OccbenchError):
    """Loading would unpickle untrusted data without the explicit opt-in flag."""


class ConfigError(OccbenchError):
    """An invalid parameter or configuration value."""
