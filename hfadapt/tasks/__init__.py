"""Tasks register themselves on import; adding a task is adding a module here."""

from .base import TASKS, Task
from . import image_classification, text_classification  # noqa: F401  (registration)

__all__ = ["TASKS", "Task"]
