"""Building block: the run directory. `RunDir` owns every path and file format of a run (recipe,
metrics, run info, status, predictions); everything else reads and writes a run through it."""
