"""The control plane's state objects on fake-gcs-server (sinergym_cloud/gcp/state.py): claims,
compare-and-swap under a concurrent writer, and the just-written document a process takes as
current for its next update without reading it (the generation precondition still decides)."""

from __future__ import annotations

from typing import Any

from sinergym_cloud.gcp.state import StateStore
from tests.conftest import Cloud, new_batch_id


def counted(store: StateStore) -> dict[str, int]:
    """Count the store's reads (each a GET of the object)."""
    calls = {"read": 0}
    read = store.read

    def counting(path: str) -> Any:
        calls["read"] += 1
        return read(path)

    store.read = counting  # type: ignore[method-assign]
    return calls


def test_a_chain_of_updates_reads_once_and_a_concurrent_writer_is_never_overwritten(cloud: Cloud) -> None:
    ours, theirs = cloud.runtime().state, cloud.runtime().state  # two processes: two stores
    path = f"test-state/{new_batch_id()}.json"
    assert ours.create(path, {"n": 0, "by": []})
    assert not theirs.create(path, {"n": 100, "by": []}), "a claim is won once"
    reads = counted(ours)

    def add(who: str) -> Any:
        return lambda d: {"n": d["n"] + 1, "by": [*d["by"], who]}

    ours.update(path, add("a"))
    ours.update(path, add("b"))
    assert reads["read"] == 1, "the second update starts from the document the first wrote"

    theirs.update(path, add("other"))  # meanwhile, another process
    assert ours.update(path, add("c")) == {"n": 4, "by": ["a", "b", "other", "c"]}
    assert reads["read"] == 2, "the stale memory lost the precondition: read once and applied again"
    assert theirs.read(path).data == {"n": 4, "by": ["a", "b", "other", "c"]}  # type: ignore[union-attr]


def test_nothing_to_do_is_decided_on_the_stored_document(cloud: Cloud) -> None:
    ours, theirs = cloud.runtime().state, cloud.runtime().state
    path = f"test-state/{new_batch_id()}.json"
    ours.create(path, {"state": "new"})
    ours.update(path, lambda d: {"state": "queued"})
    theirs.update(path, lambda d: {"state": "pending"})

    # On our memory the change has nothing to do ("not pending"); on the stored document it has.
    got = ours.update(path, lambda d: {"state": "running"} if d["state"] == "pending" else None)
    assert got == {"state": "running"}
    assert theirs.read(path).data == {"state": "running"}  # type: ignore[union-attr]


def test_a_put_or_delete_forgets_the_memory(cloud: Cloud) -> None:
    store = cloud.runtime().state
    path = f"test-state/{new_batch_id()}.json"
    store.create(path, {"n": 1})
    store.update(path, lambda d: {"n": d["n"] + 1})
    store.put(path, {"n": 10})
    assert store.update(path, lambda d: {"n": d["n"] + 1}) == {"n": 11}
    store.delete(path)
    assert store.update(path, lambda d: {"n": 0}) is None, "a deleted object is not updated"


def test_a_document_read_ahead_is_taken_as_current_and_a_stale_one_loses_the_precondition(cloud: Cloud) -> None:
    ours, theirs = cloud.runtime().state, cloud.runtime().state
    path = f"test-state/{new_batch_id()}.json"
    ours.create(path, {"n": 0})
    ahead = theirs.read(path)  # read beside other work, as a completion reads the next record
    reads = counted(ours)
    assert ours.update(path, lambda d: {"n": d["n"] + 1}, known=ahead) == {"n": 1}
    assert reads["read"] == 0, "the document read ahead stood in for the read"

    stale = theirs.read(path)
    theirs.update(path, lambda d: {"n": d["n"] + 10})  # meanwhile, another writer
    assert ours.update(path, lambda d: {"n": d["n"] + 1}, known=stale) == {"n": 12}
    assert reads["read"] == 1, "the stale read lost the precondition: read once and applied again"
