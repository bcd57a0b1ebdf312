"""What the zygote does with its memory so that a cell costs less: its heap and CPython's
arenas in 2 MiB pages (src/engine/hugepage.c), which every cell and job maps as the zygote does
(a fork copied one entry per 2 MiB), user code that frees what it allocated giving the memory
back as under python3, and the pages a run writes copied before the code arrives
(src/engine/prefault.c)."""
import os
import re
import subprocess

from conftest import PYBOX, body_of, clean_env, metric, proc_status as _status, wait_for as _wait

OPEN = ("--modules", "all", "--rpm", "1000", "--rpd", "100000")


def _rollup(pid):
    """/proc/PID/smaps_rollup's kB figures: {"Rss": ..., "AnonHugePages": ...}."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    return out


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_status(entry)["PPid"]) == pid:
                    out.append(int(entry))
            except (OSError, KeyError, ValueError):
                pass
    return out


def _thp_mode():
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        text = f.read()
    return text[text.index("[") + 1:text.index("]")]


def _spare_jobs(zygote):
    """The jobs of the zygote's idle spares: a cell's child that is not its holder."""
    jobs = []
    for cell in _children(zygote):
        for pid in _children(cell):
            try:
                if _status(pid)["Name"] != "pybox-holder":
                    jobs.append(pid)
            except (OSError, KeyError):
                pass
    return jobs


def test_zygote_memory_is_in_huge_pages_that_spares_share(module_start_server):
    srv = module_start_server(*OPEN, preload=True)
    zygotes = [p for p in _children(srv.pid) if _status(p)["Name"] == "pybox-zygote"]
    assert zygotes, "no zygote"
    for z in zygotes:
        jobs = _wait("the zygote's spares", lambda: _spare_jobs(z))
        zr = _rollup(z)
        anon = int(_status(z)["RssAnon"].split()[0])
        if _thp_mode() == "never":
            # The kernel was told never to use huge pages: pybox leaves memory as it is.
            assert zr["AnonHugePages"] == 0, zr
            continue
        # The heap and the arenas hold most of a preloaded zygote's anonymous memory.
        assert zr["AnonHugePages"] * 2 >= anon, (zr, anon)
        for job in jobs:
            # The fork kept the huge mappings: the job maps what it did not write as the
            # zygote does.
            assert _rollup(job)["AnonHugePages"] > 0, _rollup(job)
    r = srv.v1({"code": "import numpy, pandas\nprint(int(numpy.arange(10).sum()), len(pandas.DataFrame({'a': [1, 2]})))"})
    body = body_of(r)
    assert r.status_code == 200 and body["stdout"] == "45 2\n", r.text


def test_freed_small_objects_give_their_memory_back(module_start_server):
    """Objects freed by the code give back their arenas' memory, so a program that builds and
    drops a large structure of small objects can then allocate as much again under the same
    memory limit (a freed arena that kept its pages would be killed here)."""
    srv = module_start_server(*OPEN, preload=True)
    code = r"""
import gc, mmap
rounds = 0
for _ in range(3):
    node = None
    for i in range(700_000):          # ~100 MB of small objects, all from CPython's arenas
        node = (node, str(i) * 3)
    del node
    gc.collect()
    block = mmap.mmap(-1, 100 << 20)  # as much again, not from the arenas
    for off in range(0, len(block), 4096):
        block[off] = 1
    block.close()
    rounds += 1
print("rounds", rounds)
"""
    r = srv.v1({"code": code, "memory_mb": 256, "timeout": 10})
    body = body_of(r)
    assert r.status_code == 200 and body["status"] == "ok", r.text
    assert body["stdout"] == "rounds 3\n", body


def _labelled(srv, name, label):
    text = srv.get("/metrics").text
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(label)), text, re.M)
    assert m, f"/metrics has no {name}{{{label}}}"
    return int(m.group(1))


def _run_faults(srv, code, want=6):
    """The faults after the code arrived of `want` executions of `code` that warm spares
    served (one forked on demand had no dry run, and does not count)."""
    faults = []
    for _ in range(8 * want):
        if len(faults) == want:
            break
        _wait("an idle spare", lambda: metric(srv, "pybox_cells_idle") > 0)
        run0 = _labelled(srv, "pybox_job_page_faults_total", 'phase="run"')
        warm0 = _labelled(srv, "pybox_pool_executions_total", 'cell="warm"')
        r = srv.v1({"code": code})
        assert r.status_code == 200 and body_of(r)["status"] == "ok", r.text
        if _labelled(srv, "pybox_pool_executions_total", 'cell="warm"') == warm0 + 1:
            faults.append(_labelled(srv, "pybox_job_page_faults_total", 'phase="run"') - run0)
    assert len(faults) == want, faults
    return sorted(faults)[want // 2]


def test_a_run_on_a_spare_finds_the_pages_it_writes_copied(module_start_server):
    """The zygote learned which pages a run writes after a spare's dry run, and each spare
    copied them before its code arrived (src/engine/prefault.c): print(1) on a warm spare takes
    a few dozen faults after its code arrives; with --prefault-pages 0 it takes the ~150
    copy-on-write faults it took before, on the request's path.  Counted by the kernel (the
    job's rusage), not timed."""
    learned = module_start_server(*OPEN, preload=True)
    plain = module_start_server(*OPEN, "--prefault-pages", "0", preload=True)
    with_pages = _run_faults(learned, "print(1)")
    without = _run_faults(plain, "print(1)")
    assert with_pages <= 60, (with_pages, without)
    assert without >= 100, (with_pages, without)


def test_prefault_pages_out_of_range_is_a_usage_error(tmp_path):
    for bad in ("4097", "-1", "many", ""):
        p = subprocess.run([PYBOX, "serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path),
                            "--prefault-pages", bad], capture_output=True, text=True, timeout=30,
                           env=clean_env())
        assert p.returncode == 2, (bad, p.returncode, p.stderr)
        assert "--prefault-pages" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
