"""No request makes the service answer 500: every route of its OpenAPI, with bad paths, bodies and credentials."""

from __future__ import annotations

import itertools
import random
import re

import requests

from cm_plugins.comet.api import signed_headers
from tests.comet.nucleus import PASSWORDS

PATH_VALUES = ["vc1", "nosuch", "vm-vc1-0", "-1", "0", "99999999999999999999999", "%00", "a%2Fb", "é", "x" * 300,
               "..", "poweron", "1"]
BODIES = [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe\x00", b'{"cluster": {"a": 1}}', b'{"cluster": ["vc1"]}',
          b'{"cluster": "vc1", "count": "1e9"}', b'{"cluster": "vc1", "count": -3}', b'{"cluster": "vc1", "count": 1.5}',
          b'{"cluster": "vc1", "walltime_mins": "nan", "count": "1"}', b'{"cluster": "vc1", "computes": "[[["}',
          b'{"cluster": "vc1", "computes": "vm-vc1-[0-99999999]"}', b'{"name": null}', b'{"name": "' + b"a" * 5000 + b'"}',
          b'{"username": 5, "password": []}', b"username=alice&password", b'{"cluster": "vc1", "count": "1", '
          b'"allocation": {"x": 1}}']
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz",
                 "text/plain"]


def _credentials(nucleus) -> list[dict[str, str]]:
    token = nucleus.token()
    key = requests.get(f"{nucleus.base}/getkey", auth=("alice", PASSWORDS["alice"]),
                       headers={"Accept": "application/json"}, timeout=30).json()
    return [
        {"Authorization": f"Token {token}"},
        {},
        {"Authorization": "Token \u00e9\u00e9"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + "YWxpY2U="},  # no colon
        {"Authorization": 'Signature signature="AAAA"', "X-Api-Key": key["key_name"], "timestamp": "nan",
         "nonce": "ABCDEFGHIJ"},
        {"Authorization": 'Signature signature="%%%"', "X-Api-Key": key["key_name"], "timestamp": "1e400",
         "nonce": "short"},
        {"X-Api-Key": "nobody@example.org"},
        {**signed_headers(key["key_name"], key["key"]), "timestamp": "-1"},
        {"Authorization": "Bearer x"},
    ], token, key


def test_no_request_gets_a_500(nucleus):
    spec = requests.get(f"{nucleus.base}/openapi.json", timeout=30).json()
    creds, token, key = _credentials(nucleus)
    rng = random.Random(10)
    seen: dict[int, int] = {}
    routes = [(path, method) for path, ops in spec["paths"].items() for method in ops]
    routes.append(("/nucleus/v1/internal/computeset/{cs_id}/event", "post"))
    routes.append(("/nucleus/console/{token}", "get"))
    count = 0
    for path, method in routes:
        params = re.findall(r"{(\w+)}", path)
        for values in itertools.islice(itertools.product(PATH_VALUES, repeat=len(params)), 0, 60, 7 if params else 1):
            url = "http://127.0.0.1:%d" % nucleus.port + path
            for name, value in zip(params, values):
                url = url.replace("{%s}" % name, value)
            for body in rng.sample(BODIES, 4):
                headers = {**rng.choice(creds), "Content-Type": rng.choice(CONTENT_TYPES)}
                if rng.random() < 0.5:
                    headers.update({"Authorization": f"Token {token}"})
                    headers.pop("X-Api-Key", None)
                if rng.random() < 0.2:
                    headers["md5"] = rng.choice(["", "0" * 32, "zz"])
                answer = requests.request(method.upper(), url, headers=headers, data=body, timeout=60,
                                          allow_redirects=False, params={"state": "running", "iso_name": "x"})
                seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
                count += 1
                assert answer.status_code < 500, (method, url, body, headers, answer.status_code, answer.text)
                if answer.status_code in (400, 401, 403, 404):
                    assert answer.text and len(answer.text) < 2000
    assert count > 300 and {400, 401, 404} <= set(seen), seen
    assert "internal error" not in nucleus.log_text() and "Traceback" not in nucleus.log_text()


def test_a_bad_configuration_is_one_line_and_exit_2(cm, tmp_path):
    cases = {"clusters: {x: 1}\n": "clusters.x must be a mapping",
             "listen: {port: abc}\n": "malformed configuration",
             "users: {alice: {password: plain}}\n": "never a clear password",
             "users: {alice: {password_hash: md5abc}}\n": "must be an argon2 hash"}
    for text, message in cases.items():
        path = tmp_path / "nucleus.yaml"
        path.write_text(text)
        result = cm("comet", "serve", "--config", str(path))
        assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1, result.err
