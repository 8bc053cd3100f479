"""Drivers that move the engine's messages (:mod:`securefed.runtime.engine`): in memory
(:mod:`securefed.runtime.federated`, ``securefed run``, ``securefed demo``) and across machines on
Flower (:mod:`.flower`).

Nothing is imported here, so that a light module of this package (the Flower ClientApp relay,
started once per message) does not pay for the simulation's imports. One round of the engine over
numpy vectors, for tests: ``securefed.testing.rounds.simulate_round``.
"""
