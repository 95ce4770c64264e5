"""Pruning internals behind `components.prune`: MAC counting, channel surgery, importance, search.

`components.prune` is the stage module and the public entry point; these modules stay small.
"""
