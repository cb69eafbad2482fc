"""Truncated image files: OpenCV decodes a cut-off JPEG or PNG half grey and only warns on stderr, so
:func:`is_truncated` checks the file's end-of-image structure on its bytes before decoding.

- JPEG: the end-of-image marker FF D9 must follow the first start-of-scan marker. Segments before the scan
  (EXIF, which may hold a thumbnail with its own FF D9) are skipped by their lengths, and entropy-coded data
  cannot contain FF D9 (an FF byte is stuffed as FF 00), so a complete file always passes, trailing bytes
  after the marker included, and a file cut anywhere in its scan data fails.
- PNG: the IEND chunk (its CRC is a constant) must be present.
Other formats are left to the decoder.
"""
from __future__ import annotations

JPEG_SOI, JPEG_SOS, JPEG_EOI = b"\xff\xd8", 0xDA, b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"  # chunk type + CRC of the empty IEND chunk


def _jpeg_scan_start(data: bytes) -> int | None:
    """Offset of the first start-of-scan marker, walking the segments after SOI: -1 when the data ends before
    it, None when a segment is malformed (corrupt, not truncated: left to the decoder)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == JPEG_SOS:
            return pos
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return -1


def is_truncated(data: bytes) -> bool:
    """Whether the bytes of a JPEG or PNG file end before the image does (False for other formats)."""
    if data.startswith(JPEG_SOI):
        scan = _jpeg_scan_start(data)
        return scan is not None and (scan < 0 or data.find(JPEG_EOI, scan) < 0)
    if data.startswith(PNG_SIGNATURE):
        return data.rfind(PNG_IEND) < 0
    return False
