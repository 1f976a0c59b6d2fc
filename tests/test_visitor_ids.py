"""New visitor ids come from buffered OS randomness (beacon/identity.py): never twice, not across a fork either."""

from __future__ import annotations

import os
import re

from beacon.identity import new_visitor_id

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_ids_are_uuid4_and_never_repeat_across_many_refills():
    ids = [new_visitor_id() for _ in range(5000)]  # ~20 reads of the OS's randomness
    assert len(set(ids)) == len(ids)
    assert all(UUID4.fullmatch(i) for i in ids)


def test_a_forked_child_makes_other_ids_than_its_parent():
    new_visitor_id()  # the buffer now holds unused random bytes, which the child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, " ".join(new_visitor_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 65536):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = {new_visitor_id() for _ in range(50)}
    child_ids = set(child.decode().split())
    assert len(child_ids) == 50 and not parent & child_ids


def test_every_random_digit_varies_and_the_fixed_bits_are_uuid4s():
    import uuid

    ids = [new_visitor_id() for _ in range(3000)]
    for i in ids[:300]:
        u = uuid.UUID(i)
        assert (u.version, u.variant) == (4, uuid.RFC_4122)
        assert str(u) == i
    digits = [i.replace("-", "") for i in ids]
    for pos in range(32):
        seen = {d[pos] for d in digits}
        if pos == 12:
            assert seen == {"4"}
        elif pos == 16:
            assert seen == set("89ab")
        else:  # 3,000 ids: every one of the 16 values shows up unless a digit is stuck
            assert len(seen) == 16, pos
