"""The format's definition: schemas/tracekit-trace-1.json is what the code uses."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from tracekit.trace import SCHEMA, TRACE_FORMAT, load_spec

REPO = Path(__file__).resolve().parents[2]
SCHEMA_JSON = json.loads((REPO / "schemas" / "tracekit-trace-1.json").read_text())

# The spec's event tables (../shared/spec/trace-format.md), socket layer then kernel layer.
SOCKET_EVENTS = ["socket", "setsockopt", "bind", "listen", "connect", "shutdown", "close", "sysctl",
                 "syn", "datagram", "accept", "recv", "reset"]
KERNEL_EVENTS = ["reuseport_alloc", "reuseport_add_sock", "reuseport_detach_sock",
                 "reuseport_stop_listen_sock", "reuseport_select_sock", "reuseport_migrate_sock",
                 "reuseport_attach_prog", "reuseport_detach_prog", "reuseport_has_conns_set",
                 "reuseport_update_incoming_cpu", "sk_state"]


def test_format_name_comes_from_the_schema_file():
    assert TRACE_FORMAT == SCHEMA_JSON["format"] == "tracekit-trace/1"


def test_arrow_schema_follows_the_schema_file():
    assert SCHEMA.names == [c["name"] for c in SCHEMA_JSON["columns"]]
    dictionary = pa.dictionary(pa.int32(), pa.string())
    expected = {
        "host": dictionary, "seq": pa.int64(), "ts_ns": pa.int64(), "event": dictionary,
        "sk": pa.int64(), "sk2": pa.int64(), "proto": dictionary, "family": pa.int8(),
        "laddr": pa.string(), "raddr": pa.string(), "lport": pa.int32(), "rport": pa.int32(),
        "hash": pa.uint32(), "cpu": pa.int32(), "payload": pa.binary(), "name": dictionary,
        "value": pa.int64(), "prog": pa.binary(), "ret": pa.int64(), "observed": pa.int64(),
        "sk_hash": pa.uint32(),
    }
    assert {f.name: f.type for f in SCHEMA} == expected


def test_only_host_seq_and_event_are_required():
    assert [c.name for c in load_spec().columns if c.required] == ["host", "seq", "event"]
    assert [f.name for f in SCHEMA if not f.nullable] == ["host", "seq", "event"]


def test_event_vocabulary_is_the_specs():
    spec = load_spec()
    assert [e.name for e in spec.events if e.layer == "socket"] == SOCKET_EVENTS
    assert [e.name for e in spec.events if e.layer == "kernel"] == KERNEL_EVENTS


def test_observations_and_requests_require_the_four_tuple():
    events = {e.name: e for e in load_spec().events}
    four_tuple = {"laddr", "lport", "raddr", "rport"}
    for name in ("syn", "datagram", "accept", "recv", "reset"):
        assert four_tuple <= set(events[name].requires), name
    assert "hash" not in events["syn"].requires  # a missing hash leaves the decision unknown


def test_ranges_of_the_spec():
    columns = load_spec().columns_by_name
    assert (columns["lport"].min, columns["lport"].max) == (0, 65535)
    assert (columns["rport"].min, columns["rport"].max) == (0, 65535)
    assert (columns["hash"].min, columns["hash"].max) == (0, 2**32 - 1)
    assert columns["family"].values == (4, 6)
    assert columns["proto"].values == ("tcp", "udp")
