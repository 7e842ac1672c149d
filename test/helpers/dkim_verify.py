#!/usr/bin/python3
"""Independent DKIM verification with Debian's python3-dkim (dkimpy), for the render tests.

Usage: /usr/bin/python3 dkim_verify.py KEYS.json MESSAGE.eml [MESSAGE.eml ...]

KEYS.json maps DNS names to TXT records, e.g.
  {"s1._domainkey.example.com": "v=DKIM1; k=rsa; p=MIIB..."}
and stands in for DNS. For every message one JSON line is printed:
  {"file": "...", "signatures": [{"d": "...", "s": "...", "a": "...", "ok": true, "error": null}, ...]}
Every DKIM-Signature is checked (dkim.verify checks only the topmost one), so a failing signature
of a dual-signed message is named.
"""
import json
import sys

import dkim
from dkim.util import parse_tag_value


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        records = json.load(f)

    def dnsfunc(name, timeout=5):
        record = records.get(name.decode("ascii").rstrip(".").lower())
        return record.encode("ascii") if record is not None else None

    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            message = f.read()
        d = dkim.DKIM(message, minkey=1024)
        count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
        sigs = [value for name, value in d.headers if name.lower() == b"dkim-signature"]
        out = []
        for idx in range(count):
            entry = {"d": None, "s": None, "a": None, "ok": False, "error": None}
            try:
                tags = parse_tag_value(sigs[idx])
                entry.update(d=tags[b"d"].decode(), s=tags[b"s"].decode(), a=tags[b"a"].decode())
            except Exception as e:  # malformed tag list: reported, never fatal
                entry["error"] = "unparsable signature: %s" % e
            try:
                entry["ok"] = bool(d.verify(idx=idx, dnsfunc=dnsfunc))
                if not entry["ok"] and entry["error"] is None:
                    entry["error"] = "signature did not verify"
            except dkim.DKIMException as e:
                entry["error"] = str(e)
            out.append(entry)
        print(json.dumps({"file": path, "signatures": out}), flush=True)


if __name__ == "__main__":
    main()
