"""NEXRAD Level II archives record by record: what xradar 0.12 loses a whole volume over, kept
to the cuts it concerns.

An archive (and a real-time chunk set, concatenated) is a 24-byte volume header, then LDM
records: a 4-byte big-endian size and a bzip2 stream each; the first holds the 134 metadata
records (message 5 says the coverage pattern's cuts), the others the radials (message 31).
xradar 0.12 decompresses them and maps message numbers to records assuming 120 messages per
record, so

- a record that also holds status messages (message 2 between radials: 121 or 122 messages)
  loses its last radials silently; when one of them is a cut's end-of-elevation radial, the
  cut is dropped and the sweep keys become sparse (0..4, 6) while xradar's per-sweep header
  list is not, and reading the next sweep raises ``IndexError: list index out of range``
  (``NexradLevel2Store.open_store_coordinates``; KTLX20190715_120037_V06, records 26 and 31);
- one corrupt bzip2 record stops the whole volume ("Invalid data stream").

``repair`` decompresses each record on its own, walks its messages by their own lengths, drops
the radials of every cut a corrupt or truncated record cut into (its neighbours' radials say
which), closes a cut that lacks its end radial, and returns the uncompressed stream xradar
reads as it reads old uncompressed archives (stepping by each message's length), with one note
per cut that is missing, lost or closed. Message-1 (legacy) files and
files already uncompressed are left to xradar as they are.
"""

import bz2
import dataclasses
import struct

VOLUME_HEADER_BYTES = 24
CTM_BYTES = 12            # the unused "channel terminal manager" bytes before each message
MESSAGE_HEADER_BYTES = 16
RECORD_BYTES = 2432       # every message but 31 fills a fixed-size record
METADATA_RECORDS = 134
# Offsets inside a message 31 header (after CTM and message header), ICD 2620002 Table XVII-A.
_RADIAL_STATUS, _ELEVATION_NUMBER, _ELEVATION_ANGLE = 21, 22, 24
START_STATUSES = (0, 3, 5)   # start of elevation, of volume, of the last elevation
END_STATUSES = (2, 4)        # end of elevation, of volume
END_OF_ELEVATION = 2
CLOSE_SHARE = 0.9   # of a full circle's radials, for a cut without its end radial to be kept
_AZIMUTH_RESOLUTION = 20  # message 31 header: 1 = 0.5 degree radials, 2 = 1 degree
_MSG5_COUNT, _MSG5_FIRST_CUT, _MSG5_CUT_BYTES = 6, 22, 46  # message 5 (VCP), ICD Table XI


class CorruptVolumeError(ValueError):
    """Nothing of the volume can be decoded (its metadata record is corrupt)."""


@dataclasses.dataclass(frozen=True)
class Repaired:
    """An archive as xradar can read it.

    Attributes:
        data: the uncompressed stream (volume header, metadata, the radials of the cuts kept).
        notes: one sentence per cut that is missing, lost or closed (empty: nothing wrong).
        cuts_lost: how many cuts of the coverage pattern are not in ``data``.
        cuts_expected: the coverage pattern's cuts (message 5), None when it has none. The
            stream's message 5 lists only the cuts kept, in order: xradar takes a sweep's
            fixed angle from message 5 by the sweep's position, so a dropped cut would shift
            every later sweep's angle; the reader restores this count after decoding.
    """

    data: bytes
    notes: tuple[str, ...]
    cuts_lost: int
    cuts_expected: int | None = None


@dataclasses.dataclass
class _Radial:
    elevation: int
    status: int


@dataclasses.dataclass
class _Record:
    index: int
    messages: list[bytes] | None       # None: the record could not be decompressed
    radials: list[_Radial]
    error: str | None = None
    data: bytes = b""


# The start of every bzip2 stream a Level II writer makes (block size 9, first block).
_BZIP2_START = b"BZh91AY&SY"


def ldm_records(raw: bytes, start: int = VOLUME_HEADER_BYTES) -> list[tuple[int, bytes, bool]]:
    """(offset, compressed bytes, whole) of each LDM record from ``start`` (after the volume
    header); the last may be cut short (``whole`` False) when the file is. Where the bytes at
    a record's place are not a bzip2 stream (garbage written into the file), they are one
    record of their own and the walk resumes at the next bzip2 start, as xradar finds
    records."""
    records, pos = [], start
    while pos + 4 <= len(raw):
        size = abs(struct.unpack(">i", raw[pos:pos + 4])[0])
        if size == 0:
            break
        if not raw.startswith(b"BZh", pos + 4):
            following = raw.find(_BZIP2_START, pos + 4)
            end = following - 4 if following >= pos + 8 else len(raw)
            records.append((pos, raw[pos + 4:end], True))
            pos = end
            continue
        payload = raw[pos + 4:pos + 4 + size]
        records.append((pos, payload, len(payload) == size))
        pos += 4 + size
    return records


def messages(data: bytes) -> list[bytes]:
    """The messages of one decompressed record, each with its CTM bytes, sized as xradar
    steps through them (message 31: its own length; others: a fixed 2,432-byte record)."""
    found, pos = [], 0
    while pos + CTM_BYTES + MESSAGE_HEADER_BYTES <= len(data):
        halfwords, kind = struct.unpack(">HxB", data[pos + CTM_BYTES:pos + CTM_BYTES + 4])
        if halfwords == 0:
            break
        length = halfwords * 2 + CTM_BYTES
        if kind != 31:
            length = max(length, RECORD_BYTES)
        found.append(data[pos:pos + length])
        pos += length
    return found


def _message_type(message: bytes) -> int:
    return message[CTM_BYTES + 3]


def _radial(message: bytes) -> tuple[int, int]:
    """(elevation number, radial status) of a message 31."""
    base = CTM_BYTES + MESSAGE_HEADER_BYTES
    return message[base + _ELEVATION_NUMBER], message[base + _RADIAL_STATUS]


def _elevation_angle(message: bytes) -> float:
    base = CTM_BYTES + MESSAGE_HEADER_BYTES + _ELEVATION_ANGLE
    return struct.unpack(">f", message[base:base + 4])[0]


def _full_circle(message: bytes) -> int:
    """Radials of a whole cut at this radial's azimuth resolution."""
    code = message[CTM_BYTES + MESSAGE_HEADER_BYTES + _AZIMUTH_RESOLUTION]
    return 720 if code == 1 else 360


def _with_status(message: bytes, status: int) -> bytes:
    at = CTM_BYTES + MESSAGE_HEADER_BYTES + _RADIAL_STATUS
    return message[:at] + bytes([status]) + message[at + 1:]


def coverage_cuts(metadata: list[bytes]) -> dict[int, float]:
    """Cut number -> elevation angle (degrees) of the coverage pattern (message 5), or {} when
    the metadata has none."""
    for message in metadata:
        if _message_type(message) != 5:
            continue
        body = message[CTM_BYTES + MESSAGE_HEADER_BYTES:]
        count = struct.unpack(">H", body[_MSG5_COUNT:_MSG5_COUNT + 2])[0]
        cuts = {}
        for n in range(count):
            at = _MSG5_FIRST_CUT + n * _MSG5_CUT_BYTES
            if at + 2 > len(body):
                break
            code = struct.unpack(">H", body[at:at + 2])[0]
            cuts[n + 1] = round(code * 180.0 / 32768.0, 2)  # ICD "angle data format"
        return cuts
    return {}


def _read_records(raw: bytes) -> list[_Record]:
    records = []
    found_records = ldm_records(raw)
    for index, (offset, payload, whole) in enumerate(found_records):
        where = f"compressed record {index + 1} of {len(found_records)} (byte {offset:,})"
        if not whole and payload.startswith(b"BZh"):
            size = abs(struct.unpack(">i", raw[offset:offset + 4])[0])
            records.append(_Record(index, None, [], f"the file ends inside {where}, "
                                                    f"{len(payload):,} of its {size:,} bytes"))
            continue
        if not payload.startswith(b"BZh"):
            records.append(_Record(index, None, [], f"{where} is not a bzip2 record (bytes "
                                                    f"that are no Level II data)"))
            continue
        decompressor = bz2.BZ2Decompressor()
        try:
            data = decompressor.decompress(payload)
            if not decompressor.eof:
                raise OSError("the stream does not end where the record does")
        except (OSError, ValueError, EOFError) as error:
            records.append(_Record(index, None, [], f"{where} is corrupt (bzip2: {error})"))
            continue
        found = messages(data)
        radials = [_Radial(*_radial(m)) for m in found if _message_type(m) == 31]
        records.append(_Record(index, found, radials, data=data))
    return records


def cut_ends(raw: bytes) -> list[int]:
    """The elevation cuts whose end-of-elevation (or end-of-volume) radial is in ``raw``: one
    real-time chunk (the start chunk with its volume header, or an intermediate or end chunk,
    which are bare LDM records), in the order they end. A record that does not decompress
    ends nothing here (the whole volume's reading reports it)."""
    start = VOLUME_HEADER_BYTES if raw.startswith(b"AR2V") else 0
    ended = []
    for _, payload, whole in ldm_records(raw, start):
        if not whole or not payload.startswith(b"BZh"):
            continue
        try:
            data = bz2.decompress(payload)
        except (OSError, ValueError, EOFError):
            continue
        ended += [elevation for elevation, status in
                  (_radial(m) for m in messages(data) if _message_type(m) == 31)
                  if status in END_STATUSES]
    return ended


def repair(raw: bytes, only_cuts: frozenset[int] | None = None) -> Repaired | None:
    """The archive as one uncompressed stream of whole (or closed) cuts, or None where this
    layer does not apply (uncompressed, legacy message 1, no radial records).

    ``only_cuts``: keep these elevation cuts alone, as the stream of a volume still arriving
    (a real-time volume's chunks so far) from which one sweep is read; only those cuts are
    noted.

    Always the stream, not only when a cut is damaged: xradar 0.12 maps a compressed
    archive's messages to records assuming 120 per record, and records that also hold status
    messages (121, 122) lose their last radials silently; its uncompressed path steps by each
    message's own length.

    Raises:
        CorruptVolumeError: the metadata record (the first) cannot be decompressed.
    """
    if len(raw) < VOLUME_HEADER_BYTES + 4 or not raw.startswith(b"AR2V") \
            or raw[VOLUME_HEADER_BYTES + 4:VOLUME_HEADER_BYTES + 7] != b"BZh":
        return None
    records = _read_records(raw)
    if not records:
        return None
    if records[0].messages is None:
        raise CorruptVolumeError(f"its metadata record (the first compressed record) is "
                                 f"corrupt ({records[0].error})")
    # The metadata record is 134 fixed slots of 2,432 bytes, some empty.
    metadata = [records[0].data[i * RECORD_BYTES:(i + 1) * RECORD_BYTES]
                for i in range(METADATA_RECORDS)]
    radial_records = records[1:]
    if any(_message_type(m) == 1 for r in radial_records if r.messages for m in r.messages):
        return None
    cuts = coverage_cuts(metadata)

    # Which cuts a bad record cut into: the cut open before it, unless its last radial ended
    # it, and the cut after it, unless its first radial started it.
    damaged: dict[int, str] = {}
    for i, record in enumerate(radial_records):
        if record.messages is not None:
            continue
        before = next((r.radials[-1] for r in reversed(radial_records[:i]) if r.radials), None)
        after = next((r.radials[0] for r in radial_records[i + 1:] if r.radials), None)
        why = record.error
        if before is not None and before.status not in END_STATUSES:
            damaged.setdefault(before.elevation, why)
        if after is not None and after.status not in START_STATUSES:
            damaged.setdefault(after.elevation, why)
        if after is None and before is None:
            damaged.setdefault(0, why)

    # The radials of the cuts kept, in order; a kept cut whose end radial is missing is closed.
    kept: list[list] = []   # [elevation, [messages]]
    for record in radial_records:
        if record.messages is None:
            continue
        for message in record.messages:
            if _message_type(message) != 31:
                continue  # status messages between radials carry nothing the reader needs
            elevation, status = _radial(message)
            if elevation in damaged or (only_cuts is not None and elevation not in only_cuts):
                continue
            if status in START_STATUSES or not kept or kept[-1][0] != elevation:
                kept.append([elevation, []])
            kept[-1][1].append(message)
    # A cut without its end radial is closed and kept when it covers nearly its whole
    # circle; else (a file cut short inside it) it is lost, as xradar drops such a sweep.
    notes, whole = [], []
    for elevation, radials in kept:
        _, last = _radial(radials[-1])
        if last in END_STATUSES:
            whole.append((elevation, radials))
            continue
        full = _full_circle(radials[0])
        if len(radials) >= CLOSE_SHARE * full:
            radials[-1] = _with_status(radials[-1], END_OF_ELEVATION)
            whole.append((elevation, radials))
            notes.append(f"{_cut_name(elevation, cuts, radials[0])} has no end-of-elevation "
                         f"radial: closed after {len(radials):,} of its {full} radials")
        else:
            damaged.setdefault(elevation, f"it ends after {len(radials):,} of its {full} "
                                          f"radials, without its end-of-elevation radial")
    kept = whole
    present = {elevation for elevation, _ in kept}
    if only_cuts is not None:  # the other cuts are not asked about
        damaged = {c: why for c, why in damaged.items() if c in only_cuts}
    for elevation, why in sorted(damaged.items()):
        notes.append(f"{_cut_name(elevation, cuts)} lost: {why}" if elevation else
                     f"the radials after the metadata are lost: {why}")
    missing = [n for n in cuts if n not in present and n not in damaged
               and (only_cuts is None or n in only_cuts)]
    if missing:
        notes.append(_missing_note(missing, cuts, max(present, default=0)))
    header = raw[:VOLUME_HEADER_BYTES]
    # The metadata as it was (xradar reads its 134 records at fixed 2,432-byte offsets), with
    # message 5 listing the cuts kept where one before them is gone.
    order = [elevation for elevation, _ in kept]
    metadata_bytes = records[0].data[:METADATA_RECORDS * RECORD_BYTES]
    if cuts and order != list(range(1, len(order) + 1)):
        metadata_bytes = _coverage_of(metadata_bytes, order)
    body = metadata_bytes + b"".join(
        m for _, radials in kept for m in radials)
    # An uncompressed archive is recognised by a zero where a compressed one has its first
    # record's size: the metadata's first CTM bytes, unused.
    body = bytes(4) + body[4:]
    lost = len([n for n in cuts if n not in present and (only_cuts is None or n in only_cuts)]
               ) if cuts else len(damaged)
    return Repaired(data=header + body, notes=tuple(notes), cuts_lost=lost,
                    cuts_expected=len(cuts) or None)


def _coverage_of(metadata: bytes, order: list[int]) -> bytes:
    """The metadata with message 5's cut list replaced by the cuts ``order`` names."""
    out = bytearray(metadata)
    for slot in range(METADATA_RECORDS):
        start = slot * RECORD_BYTES
        if metadata[start + CTM_BYTES + 3] != 5:
            continue
        body = start + CTM_BYTES + MESSAGE_HEADER_BYTES
        first = body + _MSG5_FIRST_CUT
        cuts = b"".join(metadata[first + (n - 1) * _MSG5_CUT_BYTES:first + n * _MSG5_CUT_BYTES]
                        for n in order)
        out[body + _MSG5_COUNT:body + _MSG5_COUNT + 2] = struct.pack(">H", len(order))
        out[body + _MSG5_FIRST_CUT:body + _MSG5_FIRST_CUT + len(cuts)] = cuts
    return bytes(out)


def _missing_note(missing: list[int], cuts: dict[int, float], last_present: int) -> str:
    """One sentence for the cuts of the coverage pattern the file does not hold."""
    if not last_present:
        return "no cut of the coverage pattern is in the file whole"
    if missing == list(range(missing[0], max(cuts) + 1)) and missing[0] > last_present:
        return (f"cuts {missing[0]}-{missing[-1]} of the coverage pattern are not in the file "
                f"(it ends after cut {last_present})" if len(missing) > 1 else
                f"{_cut_name(missing[0], cuts)} is not in the file (it ends after cut "
                f"{last_present})")
    return "; ".join(f"{_cut_name(n, cuts)} is missing from the file" for n in missing)


def _cut_name(elevation: int, cuts: dict[int, float], message: bytes | None = None) -> str:
    angle = cuts.get(elevation)
    if angle is None and message is not None:
        angle = round(_elevation_angle(message), 2)
    return f"cut {elevation}" + (f" ({angle:g} deg)" if angle is not None else "")
