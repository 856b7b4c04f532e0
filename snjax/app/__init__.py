"""``snjax train`` and ``snjax demo``: the command-line application built on the library.

Not part of the library's API: nothing in ``snjax`` imports this package. It
holds the program's configuration, run loop, embedded data sets, models,
metrics and plots.
"""
