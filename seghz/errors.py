"""Errors SegHZ raises on bad input. Every message names the file (or object) and the problem."""
from __future__ import annotations


class SegHZError(Exception):
    """Base class of SegHZ's own errors."""


class BadInputError(SegHZError, ValueError):
    """A file or array is not what SegHZ needs. ``source`` names the file."""

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class SchemeMismatchError(SegHZError, ValueError):
    """Class schemes differ and no crosswalk joins them."""


class CheckpointError(SegHZError, ValueError):
    """A file is not a valid SegHZ checkpoint."""


class RegionError(SegHZError, ValueError):
    """A requested region lies outside every scene or exceeds the size cap."""


class ConflictError(SegHZError):
    """A save was based on a version that is no longer the latest."""


class WriteError(SegHZError, OSError):
    """Writing a file failed (disk full, read-only folder, ...). The message names the file; the previous
    version of the file, if any, is unchanged. Also an OSError (same ``errno``), for callers that catch those."""


class DuplicateImportError(SegHZError):
    """The imagery is already a scene of the workspace (same file content, or the same tile folder). ``scene_id``
    names that scene; importing it again needs an explicit ``allow_duplicate``."""

    def __init__(self, source: str, scene_id: str, scene_name: str, how: str):
        self.source, self.scene_id, self.scene_name = str(source), scene_id, scene_name
        super().__init__(f"{self.source}: already imported as scene '{scene_name}' ({scene_id}) — {how}; open that "
                         "scene, or import it again on purpose (a second copy's labels and splits are separate)")
