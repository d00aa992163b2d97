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


class OutputWriteError(OccbenchError):
    """Writing an output failed (disk full, read-only, permissions, something in the way): a property
    of the output location, never of an input. Stops a run; the message says what to fix."""


class RunLockedError(OccbenchError):
    """Another process holds the output folder's lock."""
