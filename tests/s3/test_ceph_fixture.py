"""The Ceph fixture itself: S3 answers, and radosgw can be stopped and started again."""

from __future__ import annotations

import pytest

from tests.ceph import Ceph

pytestmark = pytest.mark.s3


def test_rgw_stops_and_starts_again(rgw: Ceph) -> None:
    assert rgw.answers()
    rgw.stop_rgw()
    assert not rgw.answers()
    rgw.start_rgw()
    assert rgw.answers()
