import hashlib

import pytest

from probekit.core.errors import ProbekitError
from probekit.data.download import download_verified


def test_download_verifies_and_renames(tmp_path):
    payload = b"tiny payload" * 1000
    (tmp_path / "served.bin").write_bytes(payload)
    target = download_verified(
        (tmp_path / "served.bin").as_uri(),
        tmp_path / "out" / "file.bin",
        hashlib.md5(payload).hexdigest(),
    )
    assert target.read_bytes() == payload
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["file.bin"]


def test_checksum_mismatch_deletes_the_temporary_file(tmp_path):
    (tmp_path / "served.bin").write_bytes(b"tampered")
    with pytest.raises(ProbekitError, match="has MD5 .* expected 0{32}"):
        download_verified((tmp_path / "served.bin").as_uri(), tmp_path / "out" / "file.bin", "0" * 32)
    assert list((tmp_path / "out").iterdir()) == []


def test_unreachable_url(tmp_path):
    with pytest.raises(ProbekitError, match="could not download"):
        download_verified((tmp_path / "absent.bin").as_uri(), tmp_path / "out" / "file.bin", "0" * 32)
    assert list((tmp_path / "out").iterdir()) == []
