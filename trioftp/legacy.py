"""Talk to old servers that speak only the legacy text protocol.

    data = await trioftp.legacy.get("old-host", "report.csv", port=8885)
    await trioftp.legacy.put("old-host", "notes.txt", b"hello")
    await trioftp.legacy.download("old-host", "big.iso", "/tmp/big.iso")
    await trioftp.legacy.upload("old-host", "/tmp/notes.txt")

No checksum, no authentication and no confirmation of a put: use these only
until the server runs trioftp, then switch to `trioftp.get` / `trioftp.put`.
The implementation is `trioftp.client.legacy_servers`. (compat/legacy_client.py,
outside the package, is a standard-library client to copy to machines that
have no trioftp.)
"""

from trioftp.client.legacy_servers import download, get, put, upload

__all__ = ["download", "get", "put", "upload"]
