"""Mirror.put inside one transaction (as a boot of thousands of VMs stores them): by id, else by name,
and right after other changes made through TinyDB in the same transaction."""

from __future__ import annotations

from pathlib import Path

from cm.mirror import Mirror


def names(mirror: Mirror) -> list[tuple[str, str]]:
    return sorted((r["name"], r.get("id", "")) for r in mirror.records("vm", "c1"))


def test_put_by_id_then_by_name_within_and_across_transactions(tmp_path: Path):
    mirror = Mirror(tmp_path / "mirror.json")
    with mirror.transaction():
        for i in range(50):
            mirror.put("vm", "c1", {"name": f"vm{i}", "id": f"id{i}", "state": "pending"})
        mirror.put("vm", "c1", {"name": "renamed", "id": "id7", "state": "running"})  # same id: updated
        mirror.put("vm", "c1", {"name": "vm8", "id": "other", "state": "running"})  # same name, new id: replaced
        mirror.put("vm", "c2", {"name": "vm9", "id": "id9"})  # another cloud: its own record
        mirror.remove("vm", "c1", ["vm3"])  # a TinyDB change: the index must not be stale after it
        mirror.put("vm", "c1", {"name": "vm3", "id": "id3b"})
        mirror.put("vm", "c1", {"name": "vm4", "id": "id4", "state": "running"})
    reopened = Mirror(tmp_path / "mirror.json")
    found = {r["name"]: r for r in reopened.records("vm", "c1")}
    assert len(found) == 50 and "vm7" not in found and found["renamed"]["id"] == "id7"
    assert found["vm8"]["id"] == "other" and found["vm3"]["id"] == "id3b" and found["vm4"]["state"] == "running"
    assert [r["id"] for r in reopened.records("vm", "c2")] == ["id9"]
    reopened.put("vm", "c1", {"name": "vm4", "id": "id4", "state": "stopped"})  # a new transaction
    assert reopened.get("vm", "c1", "vm4")["state"] == "stopped" and len(reopened.records("vm", "c1")) == 50
    keys = list(reopened._records.current()["vm"])
    assert len(keys) == len(set(keys)) == 51  # every record has its own document id
