"""Experiments over many runs: Table 8 of the GN paper, its CPU analogue, clip-length sweeps."""
