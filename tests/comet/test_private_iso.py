"""Private ISOs, cm's extension of the Nucleus API: only their owner lists, attaches and deletes them.

alice and bob share virtual cluster vc1 (allocation abc101); a seed ISO alice uploads private must stay
hers: bob gets the very answers he gets for a name nobody uploaded.
"""

from __future__ import annotations

import hashlib
import io
import json

import requests

from tests.comet.nucleus import PASSWORDS

SECRET = b"MUNGE KEY: not for bob\n" * 64


def _call(nucleus, method, path, token, **kw):
    return requests.request(method, f"{nucleus.base}/v1/{path}", headers={"Authorization": f"Token {token}",
                                                                          **kw.pop("headers", {})}, timeout=30, **kw)


def _upload(nucleus, token, name, data, private=False):
    return _call(nucleus, "POST", "image/private" if private else "image", token,
                 headers={"md5": hashlib.md5(data).hexdigest()}, files={"file": (name, io.BytesIO(data))})


def _attach(nucleus, token, iso, where="compute/vm-vc1-0"):
    return _call(nucleus, "PUT", f"cluster/vc1/{where}/attach_iso", token, params={"iso_name": iso})


def test_a_private_iso_is_its_owners_only(nucleus):
    alice, bob = nucleus.token("alice"), nucleus.token("bob")
    assert _upload(nucleus, alice, "seed.iso", SECRET, private=True).status_code == 204
    assert _upload(nucleus, alice, "boot.iso", b"public bytes\n").status_code == 204
    assert _call(nucleus, "GET", "image", alice).json() == ["public/boot.iso", "private/seed.iso"]
    assert _call(nucleus, "GET", "image", bob).json() == ["public/boot.iso"]
    assert nucleus.iso_files() == {"private/alice/seed.iso": 0o600, "public/boot.iso": 0o600}

    # bob: attach, delete, fetch -- each answered exactly as for an ISO nobody uploaded
    for attempt in (lambda iso: _attach(nucleus, bob, iso), lambda iso: _attach(nucleus, bob, iso, "frontend"),
                    lambda iso: _call(nucleus, "DELETE", f"image/{iso}", bob),
                    lambda iso: _call(nucleus, "GET", f"image/{iso}", bob)):
        mine, never = attempt("private/seed.iso"), attempt("private/never.iso")
        assert mine.status_code == never.status_code and mine.status_code in (400, 404, 405), mine.text
        assert mine.text == never.text.replace("never.iso", "seed.iso") and b"MUNGE" not in mine.content
    assert _call(nucleus, "GET", "cluster/vc1/compute/vm-vc1-0/", bob).json()["iso"] == ""
    # bob's own private seed.iso is another file: alice's stays as she uploaded it
    assert _upload(nucleus, bob, "seed.iso", b"bob's\n", private=True).status_code == 204
    assert _call(nucleus, "GET", "image", bob).json() == ["public/boot.iso", "private/seed.iso"]
    assert (nucleus.config.parent / "state" / "iso" / "private" / "alice" / "seed.iso").read_bytes() == SECRET
    assert _call(nucleus, "DELETE", "image/private/seed.iso", bob).status_code == 204
    assert _call(nucleus, "GET", "image", alice).json() == ["public/boot.iso", "private/seed.iso"]

    # alice: only onto her own clusters' nodes; never deleted while attached
    assert _attach(nucleus, alice, "private/seed.iso").status_code == 204
    assert _call(nucleus, "GET", "cluster/vc1/compute/vm-vc1-0/", alice).json()["iso"] == "private/seed.iso"
    assert _call(nucleus, "PUT", "cluster/vc2/frontend/attach_iso", alice,
                 params={"iso_name": "private/seed.iso"}).status_code == 404  # vc2 is not hers
    busy = _call(nucleus, "DELETE", "image/private/seed.iso", alice)
    assert busy.status_code == 409
    assert busy.json()["detail"] == "private/seed.iso is attached to vm-vc1-0 of vc1; detach it first"
    assert nucleus.iso_files()["private/alice/seed.iso"] == 0o600
    assert _attach(nucleus, alice, "").status_code == 204
    assert _call(nucleus, "DELETE", "image/private/seed.iso", alice).status_code == 204
    assert _call(nucleus, "GET", "image", alice).json() == ["public/boot.iso"]
    assert nucleus.iso_files() == {"public/boot.iso": 0o600}
    gone = _call(nucleus, "DELETE", "image/private/seed.iso", alice)
    assert gone.status_code == 404 and gone.json()["detail"] == "ISO 'private/seed.iso' not found"


def test_public_isos_keep_the_nucleus_rules(nucleus):
    alice = nucleus.token("alice")
    assert _upload(nucleus, alice, "boot.iso", b"public bytes\n").status_code == 204
    refused = _call(nucleus, "DELETE", "image/public/boot.iso", alice)
    assert refused.status_code == 400
    assert refused.json() == "public ISOs are never deleted; only private ones (private/<file>) can be"
    unsent = _call(nucleus, "POST", "image/private", alice, files={"file": ("x.iso", io.BytesIO(b"x"))})
    assert unsent.status_code == 400 and unsent.json() == "md5 was not provided"
    wrong = _call(nucleus, "POST", "image/private", alice, headers={"md5": "0" * 32},
                  files={"file": ("x.iso", io.BytesIO(b"x"))})
    assert wrong.status_code == 400 and wrong.json() == "md5 does not match the file"
    climbing = _call(nucleus, "POST", "image/private", alice, headers={"md5": hashlib.md5(b"x").hexdigest()},
                     files={"file": ("../../public/x.iso", io.BytesIO(b"x"))})  # only the file's own name counts
    assert climbing.status_code == 204 and _call(nucleus, "GET", "image", alice).json() == ["public/boot.iso",
                                                                                          "private/x.iso"]
    assert nucleus.iso_files() == {"public/boot.iso": 0o600, "private/alice/x.iso": 0o600}


def test_cm_comet_iso_upload_private_list_and_delete(cm, comet, tmp_path):
    seed = tmp_path / "seed.iso"
    seed.write_bytes(SECRET)
    assert cm("cloud", "add", "bobs", "--kind", "comet", f"base_url={comet.base}", "username=bob",
              f"password={PASSWORDS['bob']}").code == 0
    done = cm("comet", "iso", "upload", str(seed), "--private")
    assert done.code == 0 and done.out.strip() == "uploaded private/seed.iso (md5 checked by the service)"
    assert json.loads(cm("comet", "iso", "list", "-f", "json").out) == [{"name": "private/seed.iso"}]
    assert json.loads(cm("comet", "iso", "list", "--cloud", "bobs", "-f", "json").out) == []
    assert cm("comet", "iso", "attach", "private/seed.iso", "vc1", "vm-vc1-0").code == 0
    stolen = cm("comet", "iso", "attach", "private/seed.iso", "vc1", "vm-vc1-1", "--cloud", "bobs")
    assert stolen.code != 0 and "unknown ISO 'private/seed.iso'" in stolen.out  # bulk: a row per node

    for words, message in [
        (("seed.iso",), "private/seed.iso is attached to vm-vc1-0 of vc1; detach it first"),
        (("seed.iso", "--cloud", "bobs"), "ISO 'private/seed.iso' not found"),
        (("public/boot.iso",), "cannot delete 'public/boot.iso': only your private ISOs (private/NAME) can be deleted"),
    ]:
        refused = cm("comet", "iso", "delete", *words)
        assert refused.code != 0 and message in refused.err, refused.err
        assert len(refused.err.strip().splitlines()) == 1 and "Traceback" not in refused.err
    assert cm("comet", "iso", "detach", "vc1", "vm-vc1-0").code == 0
    deleted = cm("comet", "iso", "delete", "private/seed.iso")
    assert deleted.code == 0 and deleted.out.strip() == "deleted private/seed.iso"
    assert json.loads(cm("comet", "iso", "list", "-f", "json").out) == []
    assert comet.iso_files() == {}
