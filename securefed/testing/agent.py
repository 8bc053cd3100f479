"""The test agent: ``python -m securefed.testing.agent`` -- TESTS AND BENCHMARKS ONLY.

The production agent (``securefed deploy agent``, :mod:`securefed.runtime.flower.agent`) with
three switches a real institution must never have:

``--seed N``
    seeds the trainer with ``client_seed(N, index)`` and the protocol's randomness (self-mask
    seeds, dither, the sketch seed if it deals it) with
    :func:`~securefed.runtime.seeded.seeded_random_bytes_unsafe`, exactly as the simulation of
    run seed N does: a deployment then computes the simulation's models up to the codec's
    stochastic rounding. Anyone who knows N can subtract the DP noise and recompute the masks;
    every seeded agent ledgers that as a hazard.
``--crash-at ROUND:KIND[:PHASE]``
    the agent process exits with status 3 (``os._exit``: no clean-up, as in a crash) when it
    receives that request, before answering it: e.g. ``1:step:mask`` (round 1's masking
    step), ``2:train``, ``0:setup``. KIND is a request kind (``join``, ``setup``, ``advert``,
    ``train``, ``step``, ``finish``, ``seal``); PHASE a step phase (``keys``, ``mask``,
    ``confirm``, ``unmask``). A request's round: its own (train, step, finish), the round it
    asks keys for (advert, a join that asks for keys), else 0.
``--misbehave ROUND:KIND``
    the institution is a malicious bank in that round, caught by the verifiable shares
    (securefed/secagg/dealing.py) on its own signed messages: ``bad-dealer`` -- the DealtShare
    it sends its lowest-index holder (in the round's protocol indices) carries a mask-key share
    off its committed polynomial, re-sealed under the pair's real channel key and re-signed
    with its identity key (the holder complains; the server leaves it out of the round before
    masking); ``bad-holder`` -- the self-seed shares of its UnmaskResponse are off the dealers'
    polynomials, re-signed (the server names it and ignores them). Either way the server
    ledgers ``round.misbehaviour`` and the round completes for the others.

Everything else -- arguments, state directory, socket -- is the production agent's.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from securefed.crypto import SigningKey
from securefed.errors import ConfigError, SecureFedError
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.institution import Institution
from securefed.runtime.federated import client_seed
from securefed.runtime.flower.agent import (
    AgentSettings,
    load_parts,
    open_institution,
    serve_until_signalled,
)
from securefed.runtime.flower.deployment import add_agent_arguments
from securefed.runtime.seeded import seeded_random_bytes_unsafe
from securefed.secagg import SecAggClient
from securefed.secagg.dealing import open_dealt, seal_shares
from securefed.secagg.messages import (
    DealtShare,
    Message,
    RevealedShare,
    ShareKeys,
    UnmaskResponse,
)
from securefed.secagg.messages import decode as decode_protocol
from securefed.testing.harness import redeal, resign

__all__ = [
    "CRASH_STATUS",
    "CrashPoint",
    "MisbehaviourKind",
    "MisbehaviourPoint",
    "crashing",
    "main",
    "misbehaving",
    "off_polynomial",
    "request_round",
    "seeded_hazard",
    "seeded_institution",
]

log = logging.getLogger(__name__)

CRASH_STATUS = 3
_KINDS = {kind.name.lower(): kind for kind in m.Kind if kind < m.Kind.JOINED}


def seeded_hazard(seed: int) -> str:
    return (
        f"TEST AGENT: the trainer and the protocol's randomness are seeded from {seed} "
        "(securefed.testing.agent --seed): anyone who knows it can subtract the DP noise and "
        "recompute the masks; never a real deployment"
    )


def request_round(request: m.Request) -> int:
    """The round a request belongs to (module docstring)."""
    if isinstance(request, m.Train | m.Step | m.Finish):
        return request.round
    if isinstance(request, m.Advert):
        return request.next.round
    if isinstance(request, m.Join) and request.next is not None:
        return request.next.round
    return 0


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """Where ``--crash-at`` makes the agent die: a round, a request kind, a step phase."""

    round: int
    kind: m.Kind
    phase: m.StepPhase | None = None

    @classmethod
    def parse(cls, text: str) -> CrashPoint:
        """``ROUND:KIND[:PHASE]``; ConfigError if malformed."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0].isdigit() or parts[1] not in _KINDS:
            raise ConfigError(
                f"--crash-at takes ROUND:KIND[:PHASE] with KIND one of {', '.join(_KINDS)}, "
                f"not {text!r}"
            )
        phase = None
        if len(parts) == 3:
            try:
                phase = m.StepPhase(parts[2])
            except ValueError:
                raise ConfigError(f"unknown step phase {parts[2]!r} in --crash-at") from None
            if parts[1] != "step":
                raise ConfigError("--crash-at names a PHASE for step requests only")
        return cls(int(parts[0]), _KINDS[parts[1]], phase)

    def matches(self, request: m.Request) -> bool:
        if request.KIND is not self.kind or request_round(request) != self.round:
            return False
        return self.phase is None or (isinstance(request, m.Step) and request.phase is self.phase)


def crashing(
    handler: Callable[[bytes], bytes], point: CrashPoint, *, die: Callable[[], None] | None = None
) -> Callable[[bytes], bytes]:
    """``handler``, except that the request ``point`` names makes the process exit with
    :data:`CRASH_STATUS` before anything is answered (``die`` replaces the exit in tests)."""

    def exit_now() -> None:
        sys.stderr.write(f"test agent: crashing at {point}\n")
        sys.stderr.flush()
        os._exit(CRASH_STATUS)

    end = die or exit_now

    def handle(data: bytes) -> bytes:
        try:
            request = m.decode(data)
        except SecureFedError:
            return handler(data)
        if not isinstance(request, m.Reply) and point.matches(request):
            end()
        return handler(data)

    return handle


class MisbehaviourKind(Enum):
    """What ``--misbehave`` makes the institution do (module docstring)."""

    BAD_DEALER = "bad-dealer"  # a mask-key share off its polynomial, dealt to one holder
    BAD_HOLDER = "bad-holder"  # self-seed shares off the polynomials, revealed at unmasking


@dataclass(frozen=True, slots=True)
class MisbehaviourPoint:
    """When and how ``--misbehave`` makes the institution cheat: a round and a misbehaviour."""

    round: int
    kind: MisbehaviourKind

    @classmethod
    def parse(cls, text: str) -> MisbehaviourPoint:
        """``ROUND:KIND``, ROUND >= 1; ConfigError if malformed."""
        kinds = ", ".join(k.value for k in MisbehaviourKind)
        parts = text.split(":")
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) < 1:
            raise ConfigError(
                f"--misbehave takes ROUND:KIND with ROUND >= 1 and KIND one of {kinds}, "
                f"not {text!r}"
            )
        try:
            kind = MisbehaviourKind(parts[1])
        except ValueError:
            raise ConfigError(
                f"unknown misbehaviour {parts[1]!r} in --misbehave (one of {kinds})"
            ) from None
        return cls(int(parts[0]), kind)

    def __str__(self) -> str:
        return f"{self.round}:{self.kind.value}"


def off_polynomial(share: bytes) -> bytes:
    """``share`` with its last bit flipped: the same length, off the dealer's polynomial."""
    return share[:-1] + bytes([share[-1] ^ 1])


def _deal_badly(message: ShareKeys, client: SecAggClient, key: SigningKey) -> tuple[Message, int]:
    """``message`` with the DealtShare to its lowest-index holder re-sealed (the pair's real
    channel key) around a mask-key share off the polynomial, committed to (the dealt root) and
    re-signed; and that holder."""
    holder = min(item.recipient for item in message.dealt)
    aead = client._channel(holder, outgoing=True)  # the malicious bank's own share key

    def corrupt(item: DealtShare) -> DealtShare:
        if item.recipient != holder:
            return item
        mask_share, seed_share = open_dealt(client.config, aead, item)
        ciphertext = seal_shares(
            client.config,
            aead,
            dealer=client.index,
            holder=holder,
            mask_share=off_polynomial(mask_share),
            seed_share=seed_share,
        )
        return dataclasses.replace(item, ciphertext=ciphertext)

    return redeal(message, key, corrupt, dealer=client), holder


def _reveal_badly(message: UnmaskResponse, key: SigningKey) -> Message:
    """``message`` with every self-seed share off its dealer's polynomial, re-signed."""
    shares = tuple(
        RevealedShare(s.owner, off_polynomial(s.share)) for s in message.self_seed_shares
    )
    return resign(message, key, self_seed_shares=shares)


def misbehaving(
    institution: Institution,
    point: MisbehaviourPoint,
    *,
    handler: Callable[[bytes], bytes] | None = None,
) -> Callable[[bytes], bytes]:
    """``handler`` (default: ``institution.handle_bytes``), except that in ``point``'s round
    the protocol messages of the institution's answers to Train and Step requests are
    rewritten as ``point`` says and re-signed with the institution's own identity key.

    A bad dealer needs its round's protocol client (its share keys), read from the
    institution's private state: this is a malicious bank, scripted for tests."""
    inner = handler or institution.handle_bytes
    key: SigningKey = institution._identity

    def rewrite(message: Message) -> Message:
        if point.kind is MisbehaviourKind.BAD_DEALER and isinstance(message, ShareKeys):
            pending = institution._pending
            if pending is None or pending.round != point.round or not message.dealt:
                return message
            bad, holder = _deal_badly(message, pending.client, key)
            _say(f"round {point.round}: dealt holder {holder} a share off the polynomial")
            return bad
        if point.kind is MisbehaviourKind.BAD_HOLDER and isinstance(message, UnmaskResponse):
            if not message.self_seed_shares:
                return message
            _say(f"round {point.round}: revealed self-seed shares off the polynomials")
            return _reveal_badly(message, key)
        return message

    def handle(data: bytes) -> bytes:
        answer = inner(data)
        try:
            request = m.decode(data)
            reply = m.decode(answer)
        except SecureFedError:
            return answer
        if (
            not isinstance(request, m.Train | m.Step)
            or request.round != point.round
            or not isinstance(reply, m.Trained | m.StepReply)
            or not reply.messages
        ):
            return answer
        messages = tuple(rewrite(decode_protocol(d)).to_bytes() for d in reply.messages)
        return m.encode(dataclasses.replace(reply, messages=messages))

    return handle


def _say(text: str) -> None:
    sys.stderr.write(f"test agent: misbehaving: {text}\n")
    sys.stderr.flush()


def seeded_institution(settings: AgentSettings, *, seed: int | None) -> Institution:
    """The production agent's institution, with the trainer and the protocol's randomness
    seeded as the simulation of run seed ``seed`` seeds them (None: the operating system's)."""
    parts = load_parts(settings)
    if seed is None:
        return open_institution(parts)
    trainer_seed = client_seed(seed, parts.index)
    return open_institution(
        parts,
        trainer_seed=trainer_seed,
        random_bytes=seeded_random_bytes_unsafe(trainer_seed ^ 0x5EC1),
        hazards=(seeded_hazard(seed),),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m securefed.testing.agent",
        description="securefed deploy agent with test switches (TESTS AND BENCHMARKS ONLY)",
    )
    add_agent_arguments(parser)
    parser.add_argument(
        "--seed", type=int, help="seed the trainer and the protocol as the simulation does"
    )
    parser.add_argument(
        "--crash-at", metavar="ROUND:KIND[:PHASE]", help="exit with status 3 on that request"
    )
    parser.add_argument(
        "--misbehave",
        metavar="ROUND:KIND",
        help="cheat in that round: bad-dealer (a bad share dealt) or bad-holder (bad shares "
        "revealed)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        point = None if args.crash_at is None else CrashPoint.parse(args.crash_at)
        cheat = None if args.misbehave is None else MisbehaviourPoint.parse(args.misbehave)
        settings = AgentSettings.from_args(args)
        institution = seeded_institution(settings, seed=args.seed)
    except (SecureFedError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    handler: Callable[[bytes], bytes] = institution.handle_bytes
    if cheat is not None:
        handler = misbehaving(institution, cheat)
    if point is not None:
        handler = crashing(handler, point)
    print(f"test agent of {settings.party}: serving on {settings.state}", file=sys.stderr)
    try:
        serve_until_signalled(settings.state, handler)
    finally:
        institution.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
