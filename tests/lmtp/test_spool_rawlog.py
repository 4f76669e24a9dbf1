"""The LMTP process's files: the message spool (memory, then an unlinked file) and rawlog records."""

from __future__ import annotations

import os
from pathlib import Path

import trio
import trio.testing

from proxyd.lmtp.rawlog import RawlogDir, RawlogStream, _RawlogFile
from proxyd.lmtp.spool import Spool, TempDir


async def _read(spool: Spool, prefix: bytes = b"") -> bytes:
    return b"".join([piece async for piece in spool.chunks(prefix)])


async def test_spool_moves_to_an_unlinked_file_past_its_memory_limit(tmp_path: Path) -> None:
    temp_dir = TempDir.open(str(tmp_path))
    assert temp_dir is not None
    spool = Spool(temp_dir, memory_limit=10)
    await spool.write(b"12345")
    assert not spool.in_file
    await spool.write(b"678901234")
    await spool.write(b"tail")
    await spool.finish()
    assert spool.in_file
    assert spool.size == 18
    assert list(tmp_path.iterdir()) == []
    # read as often as there are backends, each from the start
    assert await _read(spool, b"Received: x\r\n") == b"Received: x\r\n12345678901234tail"
    assert await _read(spool) == b"12345678901234tail"
    spool.close()


async def test_spool_without_a_directory_stays_in_memory(tmp_path: Path) -> None:
    missing = TempDir.open(str(tmp_path / "missing"))
    assert missing is None
    spool = Spool(missing, memory_limit=4)
    for piece in (b"abc", b"def", b"ghi"):
        await spool.write(piece)
    await spool.finish()
    assert not spool.in_file
    assert await _read(spool) == b"abcdefghi"


def test_rawlog_lines_are_stamped_where_they_start() -> None:
    read, write = os.pipe()
    try:
        record = _RawlogFile(write, "/x")
        assert record._format(b"LHLO x\r\nMAIL", 12.5) == b"12.500000 LHLO x\r\n12.500000 MAIL"
        # the line goes on: no stamp until the next one starts
        assert record._format(b" FROM:<>\r\n", 13.0) == b" FROM:<>\r\n"
        assert record._format(b"\n\n", 14.0) == b"14.000000 \n14.000000 \n"
    finally:
        os.close(read)
        os.close(write)


async def test_rawlog_stream_records_both_directions(tmp_path: Path) -> None:
    rawlog = RawlogDir.open(str(tmp_path))
    assert rawlog is not None
    assert RawlogDir.open(str(tmp_path / "missing")) is None
    left, right = trio.testing.memory_stream_pair()
    logged = await rawlog.wrap(left)
    assert isinstance(logged, RawlogStream)
    await logged.send_all(b"LHLO proxy\r\n")
    assert await right.receive_some() == b"LHLO proxy\r\n"
    await right.send_all(b"250 ok\r\n")
    assert await logged.receive_some() == b"250 ok\r\n"
    await logged.aclose()
    (inbound,) = tmp_path.glob("*.in")
    (outbound,) = tmp_path.glob("*.out")
    assert inbound.read_bytes().endswith(b" 250 ok\r\n")
    assert outbound.read_bytes().endswith(b" LHLO proxy\r\n")
    assert inbound.name[:-3] == outbound.name[:-4]
