import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT
from trioftp.server import Server


async def test_put_then_get_one_liners(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        await trioftp.put("127.0.0.1", "hello.txt", b"hello", port=server.port)
        assert await trioftp.get("127.0.0.1", "hello.txt", port=server.port) == b"hello"
