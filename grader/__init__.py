"""labgrade: the lab environment and autograder for concurrent network servers."""
from .errors import GraderError
from .run import grade

__all__ = ["GraderError", "grade"]
__version__ = "0.1.0"
