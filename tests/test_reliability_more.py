"""More bad inputs and faults, tried as a new user would (issue 21's closing request): each is
refused in one line naming the file or the argument, and nothing is lost.

References are independent facts: bytes and files written here, the folder left on disk, and
the command's exit status and stderr."""

import re

import pytest

from handgrad.pipelines import wider_format


def test_non_utf8_result_file_names_the_file_line_and_offset(tmp_path):
    raw = b"caf\xe9\n1\n1 2 3 4 0.9\n"
    path = tmp_path / "0--Parade" / "cafe.txt"
    path.parent.mkdir()
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=re.escape(
            f"{path}:1: expected UTF-8 text. Received: byte 0xe9 at byte offset 3")):
        wider_format.read_result_file(path)
    path.write_bytes(b"\xef\xbb\xbf" + raw.decode("latin-1").encode("utf-8"))  # re-saved
    boxes, scores = wider_format.read_result_file(path)
    assert boxes.tolist() == [[2, 1, 6, 4]] and scores.tolist() == [0.9]
