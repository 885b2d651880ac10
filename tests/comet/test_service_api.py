"""The Nucleus service over HTTP on loopback: auth, computesets as real Slurm jobs, refusals, restarts."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import time

import requests

from cm_plugins.comet.api import signed_headers
from tests.comet.conftest import squeue
from tests.comet.nucleus import PASSWORDS, wait_for


def _get(nucleus, path, token, **kw):
    return requests.get(f"{nucleus.base}/v1/{path}", headers={"Authorization": f"Token {token}"}, timeout=30, **kw)


def _start(nucleus, token, **body):
    return requests.post(f"{nucleus.base}/v1/computeset/", headers={"Authorization": f"Token {token}"},
                         json={"cluster": "vc1", "walltime_mins": "30", **body}, timeout=60)


def _wait_state(nucleus, token, cs_id, states, timeout=60):
    return wait_for(f"computeset {cs_id} in {states}",
                      lambda: (cs := _get(nucleus, f"computeset/{cs_id}/", token).json())["state"] in states and cs,
                      timeout)


def _nothing_changed(nucleus, token, slurm):
    assert _get(nucleus, "computeset/", token, params={"state": ["created", "submitted", "running"]}).json() == []
    assert squeue(slurm) == {}


def test_login_logout_and_tokens(nucleus):
    bad = requests.post(f"{nucleus.base}/rest-auth/login/", json={"username": "alice", "password": "nope"}, timeout=30)
    assert bad.status_code == 401 and "Invalid username/password" in bad.json()["detail"]
    token = nucleus.token()
    assert _get(nucleus, "cluster/", token).status_code == 200
    assert requests.post(f"{nucleus.base}/rest-auth/logout/", headers={"Authorization": f"Token {token}"},
                         timeout=30).status_code == 200
    gone = _get(nucleus, "cluster/", token)
    assert gone.status_code == 401 and gone.json() == {"detail": "Invalid token."}
    assert requests.get(f"{nucleus.base}/v1/cluster/", timeout=30).status_code == 401


def _served(nucleus) -> dict[str, int]:
    """The service's counters of listings: answered by the fast path, from the routes' cache, built."""
    text = requests.get(f"{nucleus.base}/metrics", timeout=30).text
    return {line.split()[0][len("nucleus_"):-len("_total")]: int(line.split()[1])
            for line in text.splitlines() if line.startswith("nucleus_")}


def test_cached_listings_answer_each_user_their_own_and_only_known_tokens(nucleus, slurm):
    alice, bob = nucleus.token("alice"), nucleus.token("bob")
    before = _served(nucleus)
    first, again = _get(nucleus, "cluster/", alice), _get(nucleus, "cluster/", alice)  # built, then from the cache
    assert first.status_code == again.status_code == 200 and first.content == again.content
    after = _served(nucleus)
    assert after["listings_built"] == before["listings_built"] + 1
    assert after["listings_from_fastpath"] == before["listings_from_fastpath"] + 1  # the wrapper answered the second
    assert again.headers["content-type"] == "application/json"
    assert [c["name"] for c in again.json()] == ["vc1"]
    assert [c["name"] for c in _get(nucleus, "cluster/", bob).json()] == ["vc1", "vc2"]
    assert [c["name"] for c in _get(nucleus, "cluster/", alice).json()] == ["vc1"]
    running = {"state": ["running", "submitted"]}
    assert _get(nucleus, "computeset/", alice, params=running).json() == []
    assert _get(nucleus, "computeset/", alice, params=running).json() == []
    started = _start(nucleus, alice, count="1").json()
    assert [cs["id"] for cs in _get(nucleus, "computeset/", alice, params=running).json()] == [started["id"]]
    assert _get(nucleus, "computeset/", alice, params={"state": "failed"}).json() == []
    for token in (alice[:-1] + ("0" if alice[-1] != "0" else "1"), ""):  # one wrong character; none
        refused = _get(nucleus, "cluster/", token)
        assert refused.status_code == 401 and "detail" in refused.json()
    _wait_state(nucleus, alice, started["id"], {"running"})  # no change pending: the listing stays cached
    assert _get(nucleus, "cluster/", alice).status_code == 200
    listed = _served(nucleus)
    assert _get(nucleus, "cluster/", alice).status_code == 200 and _served(nucleus)["listings_from_fastpath"] == \
        listed["listings_from_fastpath"] + 1  # cached for alice now
    requests.post(f"{nucleus.base}/rest-auth/logout/", headers={"Authorization": f"Token {alice}"}, timeout=30)
    refused = _get(nucleus, "cluster/", alice)
    assert refused.status_code == 401 and refused.json() == {"detail": "Invalid token."}
    assert _get(nucleus, "computeset/", alice, params=running).status_code == 401
    assert _served(nucleus)["listings_from_fastpath"] == listed["listings_from_fastpath"] + 1  # not from the cache
    assert _get(nucleus, "cluster/", bob).status_code == 200


def test_an_expired_token_is_refused_though_its_listing_is_cached(private_dir, slurm, test_hosts):
    from tests.comet.nucleus import serving

    with serving(private_dir / "short", slurm, test_hosts, extra={"token_ttl": 3}) as nucleus:
        old = nucleus.token()
        assert _get(nucleus, "cluster/", old).status_code == 200  # built and cached
        hits = _served(nucleus)["listings_from_fastpath"]
        assert _get(nucleus, "cluster/", old).status_code == 200
        assert _served(nucleus)["listings_from_fastpath"] == hits + 1
        time.sleep(3.2)
        expired = _get(nucleus, "cluster/", old)
        assert expired.status_code == 401 and expired.json() == {"detail": "Token has expired."}
        assert _served(nucleus)["listings_from_fastpath"] == hits + 1
        fresh = _get(nucleus, "cluster/", nucleus.token())  # the listing is still cached: a new token gets it so
        assert fresh.status_code == 200 and _served(nucleus)["listings_from_fastpath"] == hits + 2
        assert _get(nucleus, "cluster/", old).status_code == 401  # and the expired one stays refused


def test_password_is_stored_hashed_only(nucleus):
    text = nucleus.config.read_text() + nucleus.log_text()
    db = (nucleus.config.parent / "state" / "nucleus.db").read_bytes()
    for password in PASSWORDS.values():
        assert password not in text and password.encode() not in db
    assert "$argon2id$" in nucleus.config.read_text()
    assert (nucleus.config.parent / "state" / "nucleus.db").stat().st_mode & 0o077 == 0


def test_getkey_then_signed_requests_refuse_replays_and_old_timestamps(nucleus):
    url = f"{nucleus.base}/getkey"
    assert requests.get(url, auth=("alice", PASSWORDS["alice"]), timeout=30).status_code == 415
    assert requests.get(url, headers={"Accept": "application/json"}, timeout=30).status_code == 401
    key = requests.get(url, auth=("alice", PASSWORDS["alice"]), headers={"Accept": "application/json"},
                       timeout=30).json()
    assert key["key_name"] == "alice@example.org" and len(key["key"]) == 24
    headers = signed_headers(key["key_name"], key["key"])
    assert requests.get(f"{nucleus.base}/v1/cluster/", headers=headers, timeout=30).status_code == 200
    replay = requests.get(f"{nucleus.base}/v1/cluster/", headers=headers, timeout=30)
    assert replay.status_code == 401 and replay.json()["detail"] == "Nonce check failed."
    old = signed_headers(key["key_name"], key["key"], now=time.time() - 31 * 60)
    expired = requests.get(f"{nucleus.base}/v1/cluster/", headers=old, timeout=30)
    assert expired.status_code == 401 and "Timestamp" in expired.json()["detail"]
    wrong = signed_headers(key["key_name"], "x" * 24)
    assert requests.get(f"{nucleus.base}/v1/cluster/", headers=wrong, timeout=30).json()["detail"] == \
        "Signature check failed."
    # the replay was refused before any effect, so a fresh nonce still works
    assert requests.get(f"{nucleus.base}/v1/cluster/", headers=signed_headers(key["key_name"], key["key"]),
                        timeout=30).status_code == 200


def test_computeset_is_a_slurm_job_that_powers_nodes_on_and_off(nucleus, slurm):
    token = nucleus.token()
    created = _start(nucleus, token, count="2", walltime_mins="45")
    assert created.status_code == 201
    assert created.headers["Location"] == f"{nucleus.base}/v1/computeset/{created.json()['id']}/"
    cs = _wait_state(nucleus, token, created.json()["id"], {"running"})
    assert squeue(slurm) == {cs["job_id"]: "RUNNING"}
    job = slurm.run(["scontrol", "-o", "show", "job", cs["job_id"]]).stdout
    assert "TimeLimit=00:45:00" in job and "Account=abc101" in job
    hosts = {c["host"] for c in cs["computes"]}
    assert len(hosts) == 2 and hosts <= {"n1", "n2", "n3"}
    cluster = _get(nucleus, "cluster/vc1/", token).json()
    running = {c["name"]: c for c in cluster["computes"] if c["state"] == "active"}
    assert set(running) == {c["name"] for c in cs["computes"]}
    assert all(c["active_computeset"] == cs["id"] and c["active_computeset_state"] == "running"
               for c in running.values())
    ended = requests.put(f"{nucleus.base}/v1/computeset/{cs['id']}/shutdown",
                         headers={"Authorization": f"Token {token}"}, timeout=30)
    assert ended.status_code == 200 and ended.json()["state"] == "ending"
    assert _wait_state(nucleus, token, cs["id"], {"cancelled"})["state"] == "cancelled"
    assert wait_for("job gone", lambda: cs["job_id"] not in squeue(slurm) or None, 30) is True
    cluster = _get(nucleus, "cluster/vc1/", token).json()
    assert all(c["state"] == "shutoff" and c["active_computeset"] is None for c in cluster["computes"])


def test_computesets_started_together_all_run_with_their_own_nodes(nucleus, slurm):
    """Each gets its own node, powered on once. That the power-ons overlap cannot show here (the test driver
    creates a domain in a millisecond): test_comet_e2e's ..._started_together_power_on_at_the_same_time shows it."""
    from concurrent.futures import ThreadPoolExecutor

    token = nucleus.token()
    with ThreadPoolExecutor(3) as pool:
        created = list(pool.map(lambda c: _start(nucleus, token, computes=c).json(), ["vm-vc1-0", "vm-vc1-1",
                                                                                    "vm-vc1-2"]))
    started = [_wait_state(nucleus, token, cs["id"], {"running"}) for cs in created]
    assert sorted(cs["computes"][0]["name"] for cs in started) == ["vm-vc1-0", "vm-vc1-1", "vm-vc1-2"]
    assert len({cs["computes"][0]["host"] for cs in started}) == 3 and all(
        cs["computes"][0]["state"] == "active" for cs in started)
    assert sorted(squeue(slurm).values()) == ["RUNNING"] * 3
    log = nucleus.log_text()
    assert all(log.count(f"computeset {cs['id']}: powering on") == 1 for cs in started)  # each node once


def test_bad_requests_get_the_api_codes_and_change_nothing(nucleus, slurm):
    token = nucleus.token()
    auth = {"Authorization": f"Token {token}"}
    cases = [
        ({"cluster": "nosuch", "count": "1"}, 404, "not found"),
        ({"cluster": "vc2", "count": "1"}, 404, "not found"),  # alice has no allocation on vc2
        ({"count": "1", "cluster": "vc1", "walltime_mins": "0"}, 400, "walltime_mins must be between"),
        ({"count": "1", "cluster": "vc1", "walltime_mins": "2h"}, 400, "whole number of minutes"),
        ({"count": "9", "cluster": "vc1"}, 400, "There are 4 nodes available"),
        ({"count": "0", "cluster": "vc1"}, 400, "There are 4 nodes available"),
        ({"computes": "vm-vc1-[7-8]", "cluster": "vc1"}, 400, "Unknown compute nodes: vm-vc1-[7-8]"),
        ({"computes": "vm-vc1-[0-", "cluster": "vc1"}, 400, "malformed hostlist"),
        ({"count": "1", "cluster": "vc1", "allocation": "zzz999"}, 400, "Allocation zzz999 does not belong"),
        ({"count": "1", "cluster": "vc1", "allocation": "xyz202"}, 403, "may not charge"),
        ({"count": "1", "cluster": "vc1", "reservation": "bad name;"}, 400, "bad reservation name"),
    ]
    for body, status, text in cases:
        answer = requests.post(f"{nucleus.base}/v1/computeset/", headers=auth, json=body, timeout=30)
        message = answer.json() if status == 400 else answer.json()["detail"]
        assert answer.status_code == status and text in message, (body, answer.status_code, answer.text)
    malformed = requests.post(f"{nucleus.base}/v1/computeset/", headers={**auth, "Content-Type": "application/json"},
                              data=b'{"cluster": "vc1", "count": ', timeout=30)
    assert malformed.status_code == 400 and malformed.json().startswith("Malformed JSON")
    _nothing_changed(nucleus, token, slurm)
    # busy nodes: the second request for a node already in a computeset is refused
    first = _start(nucleus, token, computes="vm-vc1-[0-1]")
    assert first.status_code == 201
    busy = _start(nucleus, token, computes="vm-vc1-1")
    assert busy.status_code == 400 and "vm-vc1-1 are in an active computeset" in busy.json()
    assert len(squeue(slurm)) == 1
    bob = nucleus.token("bob")
    several = requests.post(f"{nucleus.base}/v1/computeset/", headers={"Authorization": f"Token {bob}"},
                            json={"cluster": "vc1", "count": "1"}, timeout=30)
    assert several.status_code == 400 and several.json() == "Please specify the allocation"
    assert len(squeue(slurm)) == 1


def test_compute_power_needs_an_active_computeset_and_frontend_power_works(nucleus):
    token = nucleus.token()
    auth = {"Authorization": f"Token {token}"}
    refused = requests.put(f"{nucleus.base}/v1/cluster/vc1/compute/vm-vc1-0/poweron", headers=auth, timeout=30)
    assert refused.status_code == 400 and refused.json() == "Compute is not a member of an active computeset"
    assert requests.put(f"{nucleus.base}/v1/cluster/vc1/frontend/poweron", headers=auth, timeout=30).status_code == 204
    assert _get(nucleus, "cluster/vc1/frontend/", token).json()["state"] == "active"
    for action in ("reboot", "reset", "poweroff"):
        assert requests.put(f"{nucleus.base}/v1/cluster/vc1/frontend/{action}", headers=auth,
                            timeout=30).status_code == 204
    assert _get(nucleus, "cluster/vc1/frontend/", token).json()["state"] == "shutoff"
    assert requests.put(f"{nucleus.base}/v1/cluster/vc1/frontend/explode", headers=auth, timeout=30).status_code == 404


def test_consoles_answer_303_to_a_one_time_link(nucleus):
    token = nucleus.token()
    auth = {"Authorization": f"Token {token}"}
    off = requests.get(f"{nucleus.base}/v1/cluster/vc1/frontend/console/", headers=auth, allow_redirects=False,
                       timeout=30)
    assert off.status_code == 400 and off.json() == "The VM is not running"
    requests.put(f"{nucleus.base}/v1/cluster/vc1/frontend/poweron", headers=auth, timeout=30)
    link = requests.get(f"{nucleus.base}/v1/cluster/vc1/frontend/console/", headers=auth, allow_redirects=False,
                        timeout=30)
    assert link.status_code == 303 and link.headers["Location"].startswith(f"{nucleus.base}/console/")
    page = requests.get(link.headers["Location"], timeout=30)
    assert page.status_code == 200 and "<h1>vc1</h1>" in page.text
    assert requests.get(f"{nucleus.base}/console/forged", timeout=30).status_code == 404


def test_iso_upload_checks_md5_and_attach_detach(nucleus):
    token = nucleus.token()
    auth = {"Authorization": f"Token {token}"}
    data = b"not really an ISO, but bytes all the same\n" * 100
    url = f"{nucleus.base}/v1/image"
    missing = requests.post(url, headers=auth, files={"file": ("boot.iso", io.BytesIO(data))}, timeout=30)
    assert missing.status_code == 400 and missing.json() == "md5 was not provided"
    wrong = requests.post(url, headers={**auth, "md5": "0" * 32}, files={"file": ("boot.iso", io.BytesIO(data))},
                          timeout=30)
    assert wrong.status_code == 400 and wrong.json() == "md5 does not match the file"
    assert _get(nucleus, "image", token).json() == []
    good = requests.post(url, headers={**auth, "md5": hashlib.md5(data).hexdigest()},
                         files={"file": ("boot.iso", io.BytesIO(data))}, timeout=30)
    assert good.status_code == 204
    assert _get(nucleus, "image", token).json() == ["public/boot.iso"]
    attach = f"{nucleus.base}/v1/cluster/vc1/frontend/attach_iso"
    assert requests.put(attach, headers=auth, params={"iso_name": "public/boot.iso"}, timeout=30).status_code == 204
    assert _get(nucleus, "cluster/vc1/frontend/", token).json()["iso"] == "public/boot.iso"
    assert requests.put(attach, headers=auth, params={"iso_name": "public/nope.iso"}, timeout=30).status_code == 400
    assert requests.put(attach, headers=auth, timeout=30).status_code == 400
    assert requests.put(attach, headers=auth, params={"iso_name": ""}, timeout=30).status_code == 204
    assert _get(nucleus, "cluster/vc1/frontend/", token).json()["iso"] == ""


def test_rename_checks_the_name(nucleus):
    token = nucleus.token()
    url = f"{nucleus.base}/v1/cluster/vc1/compute/vm-vc1-0/rename"
    auth = {"Authorization": f"Token {token}"}
    assert requests.post(url, headers=auth, json={"name": "bad name"}, timeout=30).status_code == 400
    assert requests.post(url, headers=auth, json={"name": "vm-vc1-1"}, timeout=30).status_code == 400
    assert requests.post(url, headers=auth, json={"name": "node-a"}, timeout=30).status_code == 204
    names = [c["name"] for c in _get(nucleus, "cluster/vc1/", token).json()["computes"]]
    assert "node-a" in names and "vm-vc1-0" not in names


def test_openapi_is_published(nucleus):
    spec = requests.get(f"{nucleus.base}/openapi.json", timeout=30).json()
    assert "/nucleus/v1/computeset/" in spec["paths"] and "/nucleus/rest-auth/login/" in spec["paths"]
    assert requests.get(f"{nucleus.base}/docs/", timeout=30).status_code == 200


def test_state_survives_kill_9_and_agrees_with_slurm_after_restart(nucleus, slurm):
    token = nucleus.token()
    keep = _wait_state(nucleus, token, _start(nucleus, token, computes="vm-vc1-0").json()["id"], {"running"})
    lost = _wait_state(nucleus, token, _start(nucleus, token, computes="vm-vc1-1").json()["id"], {"running"})
    queued = _start(nucleus, token, computes="vm-vc1-[2-3]").json()  # 2 hosts, one is free: it waits
    assert wait_for("job pending", lambda: squeue(slurm).get(queued["job_id"]) == "PENDING", 30)
    nucleus.kill9()  # the test hypervisors die with it: every domain is gone
    slurm.run(["scancel", lost["job_id"]])  # this job ends while the service is down, and the queued one starts
    wait_for("queued job running", lambda: squeue(slurm).get(queued["job_id"]) == "RUNNING", 60)
    assert lost["job_id"] not in squeue(slurm)
    nucleus.start()
    token = nucleus.token()
    assert _wait_state(nucleus, token, lost["id"], {"cancelled", "completed"}, 30)
    started = _wait_state(nucleus, token, queued["id"], {"running"}, 30)
    assert all(c["state"] == "active" for c in started["computes"])
    again = _get(nucleus, f"computeset/{keep['id']}/", token).json()
    assert again["state"] == "running" and again["job_id"] in squeue(slurm)
    # the job that still runs got its node back; the ended one's node is off
    nodes = {c["name"]: c for c in _get(nucleus, "cluster/vc1/", token).json()["computes"]}
    assert nodes["vm-vc1-0"]["state"] == "active" and nodes["vm-vc1-1"]["state"] == "shutoff"
    assert nodes["vm-vc1-1"]["active_computeset"] is None
    ids = [cs["id"] for cs in _get(nucleus, "computeset/", token).json()]
    assert ids == [keep["id"], lost["id"], queued["id"]]


def test_a_node_that_cannot_power_on_fails_the_computeset_and_ends_its_job(private_dir, slurm, test_hosts):
    from tests.comet.nucleus import Nucleus, free_ports, write_config

    broken = {**test_hosts, "n3": f"test://{private_dir}/missing/n3.xml"}  # libvirt cannot open it
    port = free_ports()
    config = write_config(private_dir / "broken", port, slurm.client_env, broken)
    nucleus = Nucleus(config, port).start()
    try:
        token = nucleus.token()
        created = _start(nucleus, token, computes="vm-vc1-[0-2]")  # three nodes need all three hosts
        failed = _wait_state(nucleus, token, created.json()["id"], {"failed"})
        assert "n3.xml" in failed["message"]
        wait_for("the job ended", lambda: failed["job_id"] not in squeue(slurm), 60)
        nodes = _get(nucleus, "cluster/vc1/", token).json()["computes"]
        assert all(n["state"] == "shutoff" and n["active_computeset"] is None for n in nodes)
    finally:
        nucleus.stop()


def test_a_start_callback_whose_commit_fails_is_retried_and_the_nodes_power_on(nucleus, slurm):
    """The database refuses the start's commit once: the callback answers 503 (never 500), nothing stays claimed,
    and the job script's retry (or the reconciler) powers the node on."""
    token = nucleus.token()
    blocker = slurm.run(["sbatch", "--parsable", "-N3", "--exclusive", "--job-name=blocker", "--output=/dev/null",
                         "--wrap", "sleep 600"]).stdout.strip().split(";")[0]
    wait_for("the blocker running", lambda: squeue(slurm).get(blocker) == "RUNNING", 30)
    cs = _start(nucleus, token, computes="vm-vc1-0").json()
    wait_for("the computeset's job pending", lambda: squeue(slurm).get(cs["job_id"]) == "PENDING", 30)
    refused = f"computeset {cs['id']}: the started callback was not recorded (database is locked)"
    db = sqlite3.connect(nucleus.config.parent / "state" / "nucleus.db", timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # another writer holds the database: the service's commits time out
        slurm.run(["scancel", blocker])
        wait_for("the start callback refused", lambda: refused in nucleus.log.read_text()
                 or f"computeset/{cs['id']}/event failed" in nucleus.log.read_text(), 90)
    finally:
        db.execute("ROLLBACK")
        db.close()
    running = _wait_state(nucleus, token, cs["id"], {"running"}, 60)
    assert running["computes"][0]["state"] == "active"
    log = nucleus.log.read_text()
    assert refused in log and "/event failed" not in log  # the service logs every 500 so: the callback got a 503
