"""Tasks register themselves on import; adding a task is adding a module here."""

from .base import TASKS, EvalContext, Task, register_task
from . import (  # noqa: F401  (registration)
    causal_lm,
    image_classification,
    question_answering,
    seq2seq,
    text_classification,
    token_classification,
)

__all__ = ["TASKS", "EvalContext", "Task", "register_task"]
