"""Deployment on Flower: the same protocol as the simulation, across processes and machines.

Flower's deployment runtime moves the bytes (SuperLink on the coordinator, one SuperNode per
institution, apps started with ``flwr run``, TLS between SuperNodes and SuperLink); securefed's
protocol, DP and audit ride on top, unchanged (docs/deploy.md).

* :mod:`.wire` -- the deployment messages, in securefed's own versioned encoding;
* :mod:`.institution` -- the institution's long-lived agent: its :class:`ClientNode` (data, DP
  trainer, accountant, ledger) and the round's :class:`SecAggClient`, in one process on the
  institution's machine, state under its state directory;
* :mod:`.coordinator` -- the server side, phase by phase over an abstract exchange;
* :mod:`.server_app` / :mod:`.client_app` -- the Flower apps (need ``securefed[flower]``); the
  ClientApp is a thin relay to the institution's agent over a local Unix socket, so no secret
  ever leaves the institution's node and no Flower message carries one;
* :mod:`.launch` -- start and stop SuperLink, SuperNodes and agents (tests, bench, operators);
* :mod:`.certs` -- test certificates with the ``cryptography`` x509 API.

Importing this package never imports flwr: the core package works without the extra.
"""
