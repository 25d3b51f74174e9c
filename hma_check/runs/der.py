"""A minimal, strict DER reader: just enough ASN.1 to walk a CMS SignedData (RFC 5652) and check its signature."""

from __future__ import annotations

from dataclasses import dataclass

SEQUENCE, SET, OCTET_STRING, INTEGER, OID, UTC_TIME, GENERALIZED_TIME = 0x30, 0x31, 0x04, 0x02, 0x06, 0x17, 0x18


class DerError(ValueError):
    """Bytes that are not the DER this reader expects; the message says where."""


@dataclass(frozen=True)
class Tlv:
    """One element: ``raw`` is the whole encoding (tag, length, contents), ``content`` its contents."""

    tag: int
    buffer: bytes
    start: int
    body: int
    end: int

    @property
    def raw(self) -> bytes:
        return self.buffer[self.start:self.end]

    @property
    def content(self) -> bytes:
        return self.buffer[self.body:self.end]

    def children(self) -> list["Tlv"]:
        if not self.tag & 0x20:
            raise DerError(f"element at byte {self.start} is not constructed")
        out, offset = [], self.body
        while offset < self.end:
            child = read(self.buffer, offset, self.end)
            out.append(child)
            offset = child.end
        return out

    def expect(self, tag: int, what: str) -> "Tlv":
        if self.tag != tag:
            raise DerError(f"{what}: expected tag 0x{tag:02x}, found 0x{self.tag:02x} at byte {self.start}")
        return self


def read(buffer: bytes, offset: int, limit: int) -> Tlv:
    """The element starting at ``offset``, which must end by ``limit``."""
    if offset + 2 > limit:
        raise DerError(f"truncated element at byte {offset}")
    tag = buffer[offset]
    if tag & 0x1F == 0x1F:
        raise DerError(f"high tag number at byte {offset} (not used by CMS)")
    first = buffer[offset + 1]
    body = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(f"indefinite length at byte {offset} (BER, not DER)")
    else:
        count = first & 0x7F
        if count > 4 or body + count > limit:
            raise DerError(f"bad length at byte {offset}")
        length = int.from_bytes(buffer[body:body + count], "big")
        if length < 0x80 or buffer[body] == 0:
            raise DerError(f"length at byte {offset} is not in its shortest form (not DER)")
        body += count
    end = body + length
    if end > limit:
        raise DerError(f"element at byte {offset} runs past its container")
    return Tlv(tag, buffer, offset, body, end)


def parse(buffer: bytes) -> Tlv:
    """The one element ``buffer`` holds, with nothing after it."""
    element = read(buffer, 0, len(buffer))
    if element.end != len(buffer):
        raise DerError(f"{len(buffer) - element.end} bytes after the end of the element")
    return element


def oid(element: Tlv) -> str:
    element.expect(OID, "object identifier")
    content = element.content
    if not content:
        raise DerError(f"empty object identifier at byte {element.start}")
    if content[-1] & 0x80:
        raise DerError(f"object identifier at byte {element.start} ends inside a subidentifier")
    parts, value = [], 0
    for byte in content:
        if value == 0 and byte == 0x80:   # X.690 8.19.2: a subidentifier is encoded in the fewest bytes
            raise DerError(f"object identifier at byte {element.start} is not in its shortest form (not DER)")
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(p) for p in head + parts[1:])


def integer(element: Tlv) -> int:
    element.expect(INTEGER, "integer")
    return int.from_bytes(element.content, "big", signed=True)
