"""The mini Table 8: a CPU analogue of GN paper Table 8 that runs on two cores.

- :mod:`.pretrain2d`: the ImageNet analogue, 2D ResNets pretrained on photo crops;
- :mod:`.flicker_task`: the video task (a disk moving over a photo, steady or flickering);
- :mod:`.tint_task`: take 1's task (two whole-frame tints in order), kept to reproduce it;
- :mod:`.study`: the command, pretraining, inflation, task, every (cell, seed), the report;
- :mod:`.report`: the cells, the per-cell table and the contrasts paired by seed.
"""
