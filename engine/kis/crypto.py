"""AES-256-CBC for encrypted notice payloads (key/iv come from the subscribe ack)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


@dataclass(frozen=True, slots=True)
class AesKey:
    """The per-session key (32 ASCII chars) and IV (16 ASCII chars) as sent by KIS."""

    key: str
    iv: str

    def __repr__(self) -> str:  # keys are session secrets: keep them out of logs
        return "AesKey(<redacted>)"

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key.encode()), modes.CBC(self.iv.encode()))

    def decrypt(self, b64: str) -> str:
        """base64 ciphertext → plaintext. ValueError on bad base64, length, padding or UTF-8."""
        try:
            data = base64.b64decode(b64, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"bad base64: {exc}") from exc
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode("utf-8")

    def encrypt(self, plaintext: str) -> str:
        """plaintext → base64 ciphertext (the simulator's side)."""
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")
