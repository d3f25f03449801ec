"""videogn-doctor's parts: the environment report, the step/memory/loader bench, the data check."""
