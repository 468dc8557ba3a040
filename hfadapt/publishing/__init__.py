"""Above the tasks: model cards, the Hub client (push, pull) and recipe references (`hub:user/repo`)."""
