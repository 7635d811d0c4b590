"""Service and destination keys cache their hash, and a copy in another process hashes anew
(an address's hash differs between processes: a probe worker gets pickled keys)."""

from __future__ import annotations

import copy
import ipaddress
import pickle
import subprocess
import sys

from lvsd.model import DestKey, Family, Protocol, ServiceKey

SERVICE = ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80)
DEST = DestKey(ipaddress.ip_address("2001:db8::7"), 8080)

IN_ANOTHER_PROCESS = """
import pickle, sys
service, dest = pickle.loads(sys.stdin.buffer.read())
from lvsd.model import DestKey, ServiceKey, Protocol
import ipaddress
table = {ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80): 1,
         DestKey(ipaddress.ip_address("2001:db8::7"), 8080): 2}
print(table[service], table[dest])
"""


def test_equal_keys_hash_alike_and_keep_their_order() -> None:
    assert hash(SERVICE) == hash(ServiceKey(Family.INET, Protocol.TCP,
                                            ipaddress.ip_address("192.0.2.1"), 80))
    assert ServiceKey.mark(5) != ServiceKey.mark(5, Family.INET6)
    assert sorted([DestKey(ipaddress.ip_address("192.0.2.9"), 1), DEST.__class__(
        ipaddress.ip_address("192.0.2.2"), 9)])[0].port == 9


def test_a_copy_or_an_unpickled_key_is_equal_with_the_same_hash() -> None:
    for key in (SERVICE, DEST, ServiceKey.mark(7)):
        for twin in (copy.copy(key), copy.deepcopy(key), pickle.loads(pickle.dumps(key))):
            assert twin == key
            assert hash(twin) == hash(key)


def test_keys_pickled_to_another_process_are_found_in_its_dicts() -> None:
    done = subprocess.run([sys.executable, "-c", IN_ANOTHER_PROCESS],
                          input=pickle.dumps((SERVICE, DEST)), capture_output=True,
                          timeout=60, check=True, env={"PYTHONHASHSEED": "12345"})
    assert done.stdout.split() == [b"1", b"2"]
