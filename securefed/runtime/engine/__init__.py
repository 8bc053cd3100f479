"""The one federation engine: a coordinator and an institution, sans-I/O, and their messages.

* :mod:`.messages` -- the typed, bounded requests and replies every transport carries;
* :mod:`.institution` -- one institution: requests in, replies out (its transition table);
* :mod:`.coordinator` -- the server's side of every round of every mode (its phase table);
* :mod:`.memory` -- the in-memory transport (``securefed run``, ``demo``, benchmarks, tests);
  the Flower transport is :mod:`securefed.runtime.flower`.
"""
