"""securefed's small "hazmat" layer: the only place that calls cryptographic primitives.

Everything above this package calls intention-revealing functions (derive a mask key, seal a
share, split a seed) and never handles a nonce, an algorithm name or a raw shared secret.

* :mod:`~securefed.crypto.suites` -- cipher suites (``default``, ``fips-p256``, the ``sm`` slot)
* :mod:`~securefed.crypto.keys` -- opaque key handles
* :mod:`~securefed.crypto.kdf` -- HKDF with mandatory purpose labels, session and round binding
* :mod:`~securefed.crypto.aead` -- AES-256-GCM with internal nonces and mandatory associated data
* :mod:`~securefed.crypto.prg` -- AES-256-CTR keystreams as ring elements
* :mod:`~securefed.crypto.shamir` -- t-of-n sharing of 32-byte secrets over GF(2**256 + 297)
* :mod:`~securefed.crypto.keyfile` -- passphrase-encrypted identity-key files
  (:mod:`~securefed.crypto.cleartext` for the unsafe, unencrypted variant)

Dependencies: the ``cryptography`` package, numpy (for keystream buffers) and the standard library.
"""

from securefed.crypto.aead import Aead
from securefed.crypto.kdf import (
    DerivedKey,
    KdfContext,
    KeyKind,
    KeyPurpose,
    derive_channel_key,
    derive_directional_key,
    derive_pairwise_key,
    derive_stream_key,
)
from securefed.crypto.keyfile import encrypt_signing_key, load_signing_key
from securefed.crypto.keys import (
    AgreementPrivateKey,
    AgreementPublicKey,
    SharedSecret,
    SigningKey,
    VerifyKey,
)
from securefed.crypto.prg import KeyStream
from securefed.crypto.shamir import Share
from securefed.crypto.suites import (
    CipherSuite,
    SuiteId,
    available_suites,
    get_suite,
    register_suite,
)

__all__ = [
    "Aead",
    "AgreementPrivateKey",
    "AgreementPublicKey",
    "CipherSuite",
    "DerivedKey",
    "KdfContext",
    "KeyKind",
    "KeyPurpose",
    "KeyStream",
    "Share",
    "SharedSecret",
    "SigningKey",
    "SuiteId",
    "VerifyKey",
    "available_suites",
    "derive_channel_key",
    "derive_directional_key",
    "derive_pairwise_key",
    "derive_stream_key",
    "encrypt_signing_key",
    "get_suite",
    "load_signing_key",
    "register_suite",
]
