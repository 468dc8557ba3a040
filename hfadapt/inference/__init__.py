"""Using a finished adapter: predict, evaluate, merge into its base."""
