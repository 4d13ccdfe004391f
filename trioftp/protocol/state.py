"""What each message does to a stream, as tables.

Every stream is opened by a client request and runs one operation. The table
maps (operation, stream state, role of the sender, message type) to the state
after the message; a combination that is not in the table is a protocol error.
The table is the same for both roles: each side looks up what it sends and what
it receives, so the two machines cannot disagree.
"""

from __future__ import annotations

import enum
from typing import Any

from trioftp.protocol.messages import (
    Cancel,
    Data,
    Delete,
    Done,
    End,
    Error,
    FileInfo,
    Get,
    List,
    Listing,
    Mkdir,
    Put,
    Ready,
    Rename,
    Stat,
    Status,
    StatusInfo,
    Window,
)


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> Role:
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


class Operation(enum.Enum):
    GET = "get"
    PUT = "put"
    LIST = "list"
    STAT = "stat"
    DELETE = "delete"
    RENAME = "rename"
    MKDIR = "mkdir"
    STATUS = "status"


class StreamState(enum.Enum):
    REQUESTED = "requested"  # the request is sent; its answer has not come yet
    TRANSFERRING = "transferring"  # DATA flows (from the server for GET, the client for PUT)
    COMMITTING = "committing"  # PUT only: END sent, waiting for the server's verdict
    CLOSED = "closed"


OPERATION_OF_REQUEST: dict[type[Any], Operation] = {
    Get: Operation.GET,
    Put: Operation.PUT,
    List: Operation.LIST,
    Stat: Operation.STAT,
    Delete: Operation.DELETE,
    Rename: Operation.RENAME,
    Mkdir: Operation.MKDIR,
    Status: Operation.STATUS,
}

_C, _S = Role.CLIENT, Role.SERVER
_REQ, _XFER, _COMMIT, _CLOSED = (
    StreamState.REQUESTED,
    StreamState.TRANSFERRING,
    StreamState.COMMITTING,
    StreamState.CLOSED,
)

STREAM_TRANSITIONS: dict[tuple[Operation, StreamState, Role, type[Any]], StreamState] = {
    (Operation.GET, _REQ, _S, FileInfo): _XFER,
    (Operation.GET, _REQ, _C, Window): _REQ,  # credit may come with the request (v2.1)
    (Operation.GET, _XFER, _S, Data): _XFER,
    (Operation.GET, _XFER, _C, Window): _XFER,
    (Operation.GET, _XFER, _S, End): _CLOSED,
    (Operation.PUT, _REQ, _S, Ready): _XFER,
    (Operation.PUT, _REQ, _S, FileInfo): _CLOSED,  # an identical file is already there
    (Operation.PUT, _XFER, _C, Data): _XFER,
    (Operation.PUT, _XFER, _S, Window): _XFER,
    (Operation.PUT, _XFER, _C, End): _COMMIT,
    (Operation.PUT, _COMMIT, _S, Window): _COMMIT,
    (Operation.PUT, _COMMIT, _S, FileInfo): _CLOSED,
    (Operation.LIST, _REQ, _S, Listing): _REQ,  # Listing(last=True) closes: see next_stream_state
    (Operation.STAT, _REQ, _S, FileInfo): _CLOSED,
    (Operation.DELETE, _REQ, _S, Done): _CLOSED,
    (Operation.RENAME, _REQ, _S, Done): _CLOSED,
    (Operation.MKDIR, _REQ, _S, Done): _CLOSED,
    (Operation.STATUS, _REQ, _S, StatusInfo): _CLOSED,
}

# In every open state, either side may CANCEL, and the server may answer ERROR.
for _op in Operation:
    for _state in (_REQ, _XFER, _COMMIT):
        STREAM_TRANSITIONS[(_op, _state, _C, Cancel)] = _CLOSED
        STREAM_TRANSITIONS[(_op, _state, _S, Cancel)] = _CLOSED
        STREAM_TRANSITIONS[(_op, _state, _S, Error)] = _CLOSED


def next_stream_state(
    operation: Operation, state: StreamState, sender: Role, message: Any
) -> StreamState | None:
    """Return the state after `message`, or None if the table has no such move."""
    new_state = STREAM_TRANSITIONS.get((operation, state, sender, type(message)))
    if isinstance(message, Listing) and message.last and new_state is not None:
        return StreamState.CLOSED
    return new_state
