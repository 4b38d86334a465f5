"""Image signatures: what is signed, signing on the host, verifying on the device.

The signed message binds the image to where and as what it may be installed
(protocol/SPEC.md, "Signatures"):

    b"uartupdate-image-v1\\0" + section + b"\\0" + version + b"\\0" + decimal(size) + b"\\0" + sha256(image)

so a signature cannot be replayed into another section or as another version.
`sig` = {"alg": ALG, "v": base64(signature)}; for alg "sha256", `v` is the hex digest.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

SHA256 = "sha256"
ECDSA_P256 = "ecdsa-p256-sha256"
ED25519 = "ed25519"
RSA_PSS = "rsa-pss-sha256"
SIGNATURE_ALGS = (ECDSA_P256, ED25519, RSA_PSS)
ALGS = (SHA256, *SIGNATURE_ALGS)
KEY_TYPES = {"ecdsa-p256": ECDSA_P256, "ed25519": ED25519, "rsa-2048": RSA_PSS, "rsa-3072": RSA_PSS}
PREFIX = b"uartupdate-image-v1\x00"
#: PSS salt as long as the digest, as MCUboot's imgtool uses.
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey]


class KeyError_(ValueError):
    """A key file that cannot be used: not PEM, not a supported type, or the wrong curve or size."""


def signed_message(section: str, version: str, size: int, digest: bytes) -> bytes:
    for name, value in (("section", section), ("version", version)):
        if "\x00" in value:
            raise ValueError(f"{name} must not contain NUL")
    return PREFIX + f"{section}\x00{version}\x00{size}\x00".encode() + digest


def alg_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyError_(f"ECDSA keys must be on P-256, not {key.curve.name}")
        return ECDSA_P256
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return ED25519
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size not in (2048, 3072):
            raise KeyError_(f"RSA keys must be 2048 or 3072 bits, not {key.key_size}")
        return RSA_PSS
    raise KeyError_(f"unsupported key type {type(key).__name__}")


def generate_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise KeyError_(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


def private_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: what openssl genpkey writes and imgtool reads."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: str | Path) -> PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyError_(f"key {path} is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyError_(f"{path} is not a PEM private key") from None
    alg_of(key)  # type: ignore[arg-type]
    return key  # type: ignore[return-value]


def load_public_key(pem: bytes, where: str = "key") -> PublicKey:
    """A trusted public key (SubjectPublicKeyInfo PEM); a private key PEM is accepted too."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyError_(f"{where} is not a PEM public key") from None
    alg_of(key)  # type: ignore[arg-type]
    return key  # type: ignore[return-value]


def sign(key: PrivateKey, section: str, version: str, size: int, digest: bytes) -> dict[str, str]:
    """The `sig` object for an image."""
    message = signed_message(section, version, size, digest)
    alg = alg_of(key)
    if alg == ECDSA_P256:
        raw = key.sign(message, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]
    elif alg == ED25519:
        raw = key.sign(message)  # type: ignore[call-arg,union-attr]
    else:
        raw = key.sign(message, PSS, hashes.SHA256())  # type: ignore[call-arg,union-attr]
    return {"alg": alg, "v": base64.b64encode(raw).decode()}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def decode_signature(alg: str, v: str) -> bytes:
    """The raw signature of `v`; ValueError with a precise reason when it cannot be one."""
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("sig.v is not valid base64") from None
    if alg == ED25519 and len(raw) != 64:
        raise ValueError(f"an ed25519 signature is 64 bytes, sig.v holds {len(raw)}")
    if alg == ECDSA_P256 and not 8 <= len(raw) <= 72:
        raise ValueError(f"an ECDSA P-256 signature (DER) is 8..72 bytes, sig.v holds {len(raw)}")
    if alg == RSA_PSS and len(raw) not in (256, 384):
        raise ValueError(f"an RSA-PSS signature is 256 or 384 bytes, sig.v holds {len(raw)}")
    return raw


def verify(keys: list[PublicKey], alg: str, signature: bytes, message: bytes) -> Verdict:
    """Does any trusted key of `alg`'s type verify `signature` over `message`?"""
    candidates = [k for k in keys if alg_of(k) == alg]
    if not candidates:
        return Verdict(False, f"no trusted key of type {alg}")
    for key in candidates:
        try:
            if alg == ECDSA_P256:
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]
            elif alg == ED25519:
                key.verify(signature, message)  # type: ignore[call-arg,union-attr]
            else:
                if len(signature) != key.key_size // 8:  # type: ignore[union-attr]
                    continue
                key.verify(signature, message, PSS, hashes.SHA256())  # type: ignore[call-arg,union-attr]
            return Verdict(True)
        except InvalidSignature:
            continue
    return Verdict(False, "signature does not verify with any trusted key (it covers the image, section and version)")
