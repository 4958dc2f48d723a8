"""Errors a user can act on: each message is one paragraph naming the file, field and value."""


class NnstudyError(Exception):
    """Base class for problems caused by input or configuration, shown without a traceback."""


class DataNotFoundError(NnstudyError):
    """A data set is in none of the places nnstudy looks, and cannot be downloaded."""


class DataIntegrityError(NnstudyError):
    """A file's checksum differs from the catalog's."""


class DataFormatError(NnstudyError):
    """A raw file cannot be parsed: wrong field count, bad magic number, non-numeric value..."""


class DownloadError(NnstudyError):
    """A download failed after its retries."""


class ValidationFailed(NnstudyError):
    """A data set failed its expectation suite."""


class StudySpecError(NnstudyError):
    """The study specification (YAML or parameters) is invalid."""


class SettingsError(NnstudyError):
    """A configured path or switch is unusable, e.g. an output folder that escapes the working directory."""


class ClusterError(NnstudyError):
    """The choice of where trials run is invalid, or the Dask cluster cannot be used."""


class TrialsFailed(NnstudyError):
    """One or more training trials failed."""


class ReferenceDataError(NnstudyError):
    """The published results or conclusions file the report compares against is malformed."""


def join_some(items: list[str], limit: int | None) -> str:
    """The first `limit` items joined with '; ', then '; and N more' for the rest (all when limit is None)."""
    shown = items if limit is None else items[:limit]
    text = "; ".join(shown)
    return text + (f"; and {len(items) - len(shown)} more" if len(items) > len(shown) else "")
