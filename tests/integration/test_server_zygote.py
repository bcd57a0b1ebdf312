"""Zygotes outlive the threads that needed them: a zygote started while serving one connection
(on a recycle, with no warm pool to start it from its own thread) keeps serving after that
connection and its thread are gone."""
import re

import requests


def metric(srv, name):
    text = srv.get("/metrics").text
    m = re.search(r"^%s (\d+)" % re.escape(name), text, re.M)
    assert m, name
    return int(m.group(1))


def test_zygote_survives_the_connection_that_started_it(start_server):
    srv = start_server("--spares", "0:0", "--recycle", "3:0", "--rpm", "1000", "--rpd", "100000")
    for i in range(7):
        # A new connection each time: its server thread ends when it closes.
        r = requests.post(srv.url + "/v1/execute", json={"code": "print(%d)" % i},
                          headers={"Authorization": "Bearer " + srv.admin_key,
                                   "Connection": "close"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["stdout"] == "%d\n" % i
    # Executions 1-3 on the keyed callers' first zygote, 4-6 on its second, 7 on its third:
    # recycled, never replaced because one died.  The anonymous callers' zygote is the fourth.
    assert metric(srv, "pybox_zygotes_started_total") == 4
    assert "the zygote died" not in srv.log_text()
