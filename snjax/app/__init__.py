"""``snjax train`` and ``snjax demo``: the command-line application built on the library.

Not part of the library's API: nothing in ``snjax`` imports this package, and
it uses only the library's public names. Its modules, from the command line
down:

* :mod:`snjax.app.cli`: the ``snjax`` command line; the ``train`` flags are
  made from :class:`snjax.app.config.TrainConfig`.
* :mod:`snjax.app.config`: :class:`~snjax.app.config.TrainConfig`, each data
  set's default recipe.
* :mod:`snjax.app.run`: :func:`~snjax.app.run.train`, one run from start (or
  resume) to outputs.
* :mod:`snjax.app.run_folder`: the run folder's rules.
* :mod:`snjax.app.trainer`: the models, optimizers, train step and keys of a
  configuration.
* :mod:`snjax.app.chunks`: chunks of train steps (``lax.scan`` or a loop).
* :mod:`snjax.app.distributed`: one run on several processes (JAX's
  multi-controller runtime); :mod:`snjax.app.preemption`: the step at which
  every process saves after a SIGTERM.
* :mod:`snjax.app.data`, :mod:`snjax.app.models`, :mod:`snjax.app.metrics`,
  :mod:`snjax.app.plots`: the embedded data sets, the networks, the sample
  quality measures, the pictures.
* :mod:`snjax.app.demo`: ``snjax demo``.
"""
