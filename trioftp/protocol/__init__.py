"""The trioftp v2 protocol and the legacy text protocol, as pure code.

This package contains no networking code at all: it turns bytes into messages
and messages into bytes, and keeps the state tables that say what may be sent
when. It imports no trio, opens no socket and touches no file, so everything in
it is tested with bytes alone. `protocol_spec.md` at the repository root is the
normative description of what it implements.
"""

from trioftp.protocol.connection import (
    NEED_DATA,
    PEER_CLOSED,
    Connection,
    ConnectionState,
    DataHeader,
    Settings,
)
from trioftp.protocol.errors import (
    ErrorCode,
    FrameTooLarge,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from trioftp.protocol.frames import PREFACE, FrameType
from trioftp.protocol.messages import (
    FEATURE_ANONYMOUS,
    FEATURE_AUTH,
    Auth,
    Authorized,
    Cancel,
    Data,
    Delete,
    Done,
    End,
    Entry,
    Error,
    FileInfo,
    Get,
    Goodbye,
    Hello,
    Kind,
    List,
    Listing,
    Message,
    Mkdir,
    Put,
    Ready,
    Rename,
    Stat,
    Status,
    StatusInfo,
    Window,
)
from trioftp.protocol.state import Operation, Role, StreamState

__all__ = [
    "FEATURE_ANONYMOUS",
    "FEATURE_AUTH",
    "NEED_DATA",
    "PEER_CLOSED",
    "PREFACE",
    "Auth",
    "Authorized",
    "Cancel",
    "Connection",
    "ConnectionState",
    "Operation",
    "StreamState",
    "Data",
    "DataHeader",
    "Delete",
    "Done",
    "End",
    "Entry",
    "Error",
    "ErrorCode",
    "FileInfo",
    "FrameTooLarge",
    "FrameType",
    "Get",
    "Goodbye",
    "Hello",
    "Kind",
    "List",
    "Listing",
    "LocalProtocolError",
    "Message",
    "Mkdir",
    "ProtocolError",
    "Put",
    "Ready",
    "RemoteProtocolError",
    "Rename",
    "Role",
    "Settings",
    "Stat",
    "Status",
    "StatusInfo",
    "Window",
]
