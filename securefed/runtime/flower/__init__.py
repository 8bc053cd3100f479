"""The Flower transport of the engine: the same coordinator and institutions as the simulation,
across processes and machines (docs/deploy.md).

Flower's deployment runtime moves the bytes (SuperLink on the coordinator, one SuperNode per
institution, apps started with ``flwr run``, TLS between SuperNodes and SuperLink); the engine
(:mod:`securefed.runtime.engine`) -- its protocol, DP and audit -- rides on top, unchanged.

* :mod:`.deployment` -- what every process agrees on: the refusal of simulation-only keys, the
  ServerApp's settings, the Flower App file, the agent's command line;
* :mod:`.server` -- the coordinator's side over any exchange (:func:`~.server.run_server`);
* :mod:`.agent` -- the institution's long-lived agent: one engine institution (its data, DP
  trainer, accountant, ledger, identity key), answering on a local Unix socket;
* :mod:`.server_app` / :mod:`.client_app` -- the Flower apps (need ``securefed[flower]``); the
  ClientApp is a thin relay to the agent, so no secret ever leaves the institution's node and
  no Flower message carries one;
* :mod:`.launch` -- start and stop SuperLink, SuperNodes and agents (tests, bench, operators);
* :mod:`.bench` -- ``securefed bench deploy``: a configuration on Flower against the simulation;
* :mod:`.certs`, :mod:`.identity`, :mod:`.relay` -- test certificates, key files, the socket's
  framing.

Importing this package never imports flwr: the core package works without the extra.
"""
