"""Channel importance criteria, one module each, selected by file name: higher score = keep.

Each module's `score(model, groups, calibration)` gives one score vector per group. A group with
several producers (ResNet's residual stream) sums its members' scores. A new criterion is one file
here: `prune.criterion`'s choices and `IMPORTANCE` are both read from this folder.
"""
