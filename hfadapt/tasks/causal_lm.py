"""Placeholder: this task module is being written (issue 3)."""
