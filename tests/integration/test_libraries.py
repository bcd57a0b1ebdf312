"""The data-science libraries users expect: pandas, matplotlib (Agg, PNG out, no warning) and
scipy run under the default allowlist, the documented CSV and main() examples work as written,
reportlab writes a PDF, and fpdf, allowed but not packaged in Debian 12, says so in plain words.

Each case runs twice: anonymously through a server whose zygote preloads (what `pybox serve`
does), and through local `pybox run` without --preload (every import paid in the execution).
"""
import base64
import importlib.util
import json
import subprocess

import pytest

from conftest import PYBOX, SLOW, body_of, clean_env

PNG = b"\x89PNG\r\n\x1a\n"

# S3's documented request, verbatim.
S3_SCRIPT = ("def main():\n    import numpy as np\n    import pandas as pd\n"
             "    print(\"Processing data...\")\n    data = np.array([1, 2, 3, 4, 5])\n"
             "    return {\"mean\": float(np.mean(data)), \"sum\": int(np.sum(data))}")

# S4's README example: a CSV read with csv.DictReader, its total printed and written.
CSV_DATA = b"id,value\n1,100\n2,250\n3,50\n"
CSV_SCRIPT = """import csv
total = 0
with open("data.csv", newline="") as f:
    for row in csv.DictReader(f):
        total += int(row["value"])
print(f"Total: {total}")
with open("result.txt", "w") as f:
    f.write(f"Total: {total}")
"""

PANDAS = """import pandas as pd
df = pd.DataFrame({"city": ["a", "b", "a", "c", "b", "a"], "sales": [1, 2, 3, 4, 5, 6]})
g = df.groupby("city")["sales"].agg(["sum", "mean"])
print(g.to_csv(), end="")
print("describe", df["sales"].describe()["mean"])
print("pivot", df.assign(n=1).pivot_table(index="city", values="n", aggfunc="sum")["n"].to_dict())
"""

MATPLOTLIB = """import matplotlib
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot([1, 2, 3, 4], [1, 4, 2, 8], label="line")
ax.set_title("Title with text")
ax.legend()
fig.savefig("plot.png")
print("backend", matplotlib.get_backend())
"""

SCIPY = """from scipy import stats, optimize, integrate, linalg
import numpy as np
print("cdf", round(float(stats.norm.cdf(0.0)), 6))
print("min", round(float(optimize.minimize_scalar(lambda x: (x - 2.0) ** 2).x), 4))
print("quad", round(float(integrate.quad(lambda x: x * x, 0, 3)[0]), 6))
print("det", round(float(linalg.det(np.array([[2.0, 1.0], [1.0, 3.0]]))), 6))
"""

REPORTLAB = """from reportlab.pdfgen import canvas
c = canvas.Canvas("out.pdf")
c.drawString(72, 720, "Hello from reportlab")
c.save()
print("saved")
"""


@pytest.fixture(scope="module")
def server(module_start_server):
    return module_start_server("--rpm", "100000", "--rpd", "1000000", preload=True)


def local(tmp_path, code, *args, files=None):
    """`pybox run --json` of `code` (no preload, the default allowlist): the result object."""
    (tmp_path / "main.py").write_text(code)
    argv = [PYBOX, "run", "main.py", "--json", "--timeout", "30"] + list(args)
    for name, data in (files or {}).items():
        (tmp_path / ("in-" + name)).write_bytes(data)
        argv += ["--file", "%s=%s" % (name, tmp_path / ("in-" + name))]
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=120 * SLOW,
                       env=clean_env())
    lines = p.stdout.decode().splitlines()
    assert lines, (p.returncode, p.stderr)
    return json.loads(lines[0])


def remote(server, code, main=False, files=None, return_files=()):
    """An anonymous POST /v1/execute (the default allowlist applies): the result object."""
    body = {"code": code, "timeout": 10}
    if main:
        body["main"] = True
    if files:
        body["files"] = [{"name": n, "content_base64": base64.b64encode(d).decode()}
                         for n, d in files.items()]
    if return_files:
        body["return_files"] = list(return_files)
    r = server.v1(body)
    assert r.status_code == 200, r.text
    return body_of(r)


def run(mode, server, tmp_path, code, main=False, files=None, return_files=()):
    if mode == "server":
        return remote(server, code, main=main, files=files, return_files=return_files)
    args = (["--main"] if main else []) + [a for n in return_files for a in ("--return", n)]
    return local(tmp_path, code, *args, files=files)


MODES = ["server", "local"]


def ok(res):
    assert res["status"] == "ok", res
    assert res["stderr"] == "", res
    return res


@pytest.mark.parametrize("mode", MODES)
def test_pandas_dataframe(mode, server, tmp_path):
    """A DataFrame grouped, described and pivoted: the numbers are pandas' own."""
    res = ok(run(mode, server, tmp_path, PANDAS))
    assert res["stdout"] == ("city,sum,mean\na,10,3.3333333333333335\nb,7,3.5\nc,4,4.0\n"
                             "describe 3.5\npivot {'a': 3, 'b': 2, 'c': 1}\n"), res


@pytest.mark.parametrize("mode", MODES)
def test_s3_documented_script(mode, server, tmp_path):
    """S3's documented script, numpy and pandas imported in def main(), answers as documented:
    result {"mean": 3.0, "sum": 15}, stdout "Processing data..."."""
    res = ok(run(mode, server, tmp_path, S3_SCRIPT, main=True))
    assert res["result"] == {"mean": 3.0, "sum": 15}, res
    assert res["stdout"] == "Processing data...\n", res


@pytest.mark.parametrize("mode", MODES)
def test_matplotlib_savefig_png_without_warnings(mode, server, tmp_path):
    """pyplot draws with Agg and savefig writes a PNG that comes back; nothing on stderr (no
    font-cache or config-directory warning, no display)."""
    res = ok(run(mode, server, tmp_path, MATPLOTLIB, return_files=["plot.png"]))
    assert res["stdout"] == "backend agg\n", res
    png = base64.b64decode(res["files"]["plot.png"]["content_base64"])
    assert png.startswith(PNG), png[:16]
    assert len(png) > 1000


def test_preloaded_zygote_builds_no_font_cache_per_execution(server):
    """In the server, pandas and matplotlib come preloaded: an execution finds them in
    sys.modules before importing anything, matplotlib's cache directory is the cell's own
    empty /tmp (no font list rebuilt or written), and its font list names only fonts the jail
    can open."""
    code = """import sys
print("preloaded", all(m in sys.modules for m in ("numpy", "pandas", "matplotlib.pyplot")))
import os
import matplotlib
import matplotlib.font_manager as fm
import matplotlib.pyplot as plt
print("cachedir", matplotlib.get_cachedir(), os.listdir("/tmp"))
fonts = [f.fname for f in fm.fontManager.ttflist + fm.fontManager.afmlist]
print("fonts", len(fonts) > 10, all(os.path.isfile(f) for f in fonts))
plt.plot([1, 2])
plt.savefig("/tmp/x.png")
print("after", os.listdir("/tmp"))
"""
    r = server.admin({"code": code}, v1=True)
    res = ok(body_of(r))
    assert res["stdout"] == ("preloaded True\ncachedir /tmp []\nfonts True True\n"
                             "after ['x.png']\n"), res


def test_preloaded_state_does_not_carry_over(server):
    """Options set on the preloaded pandas and matplotlib by one execution are not what the
    next one sees: each cell has its own copy of the zygote's modules."""
    change = ("import pandas as pd\nimport matplotlib\n"
              "pd.set_option('display.max_rows', 3)\nmatplotlib.rcParams['lines.linewidth'] = 9\n"
              "print(pd.get_option('display.max_rows'), matplotlib.rcParams['lines.linewidth'])\n")
    look = ("import pandas as pd\nimport matplotlib\n"
            "print(pd.get_option('display.max_rows'), matplotlib.rcParams['lines.linewidth'])\n")
    assert ok(remote(server, change))["stdout"] == "3 9.0\n"
    assert ok(remote(server, look))["stdout"] == "60 1.5\n"


@pytest.mark.parametrize("mode", MODES)
def test_scipy(mode, server, tmp_path):
    """scipy is allowlisted: stats, optimize, integrate and linalg compute."""
    res = ok(run(mode, server, tmp_path, SCIPY))
    assert res["stdout"] == "cdf 0.5\nmin 2.0\nquad 9.0\ndet 5.0\n", res


@pytest.mark.parametrize("mode", MODES)
def test_csv_dictreader_readme_example(mode, server, tmp_path):
    """S4's README example: the CSV given as an input file, read with csv.DictReader, the total
    printed and written to result.txt, which comes back."""
    res = ok(run(mode, server, tmp_path, CSV_SCRIPT, files={"data.csv": CSV_DATA},
                 return_files=["result.txt"]))
    assert res["stdout"] == "Total: 400\n", res
    assert base64.b64decode(res["files"]["result.txt"]["content_base64"]) == b"Total: 400"


@pytest.mark.parametrize("mode", MODES)
def test_harmless_stdlib_additions(mode, server, tmp_path):
    """cmath, struct, warnings and zoneinfo are on the default allowlist and work."""
    code = ("import cmath, struct, warnings, zoneinfo, datetime\n"
            "warnings.filterwarnings('ignore')\n"
            "print(cmath.sqrt(-4), struct.pack('<H', 258).hex())\n"
            "tz = zoneinfo.ZoneInfo('Europe/Paris')\n"
            "print(datetime.datetime(2024, 7, 1, 12, tzinfo=tz).utcoffset())\n")
    res = ok(run(mode, server, tmp_path, code))
    assert res["stdout"] == "2j 0201\n2:00:00\n", res


@pytest.mark.parametrize("mode", MODES)
def test_reportlab_writes_a_pdf(mode, server, tmp_path):
    """reportlab (S1's documented allowlist; Debian's python3-reportlab) writes a PDF."""
    res = ok(run(mode, server, tmp_path, REPORTLAB, return_files=["out.pdf"]))
    assert res["stdout"] == "saved\n", res
    assert base64.b64decode(res["files"]["out.pdf"]["content_base64"]).startswith(b"%PDF-")


@pytest.mark.parametrize("mode", MODES)
def test_fpdf_says_it_is_not_installed(mode, server, tmp_path):
    """fpdf is on the documented allowlist but Debian 12 does not package it: importing it is
    a ModuleNotFoundError that names the module and says it is allowed but not installed on
    this server (and, were it ever installed, it would simply import)."""
    code = "print('before', flush=True)\nimport fpdf\nprint('imported')\n"
    res = run(mode, server, tmp_path, code)
    if importlib.util.find_spec("fpdf") is not None:
        assert ok(res)["stdout"] == "before\nimported\n"
        return
    message = "fpdf is allowed but not installed on this server"
    assert res["status"] == "error", res
    assert res["stdout"] == "before\n", res
    assert res["error"]["type"] == "ModuleNotFoundError", res
    assert res["error"]["message"] == message, res
    assert res["stderr"].endswith("ModuleNotFoundError: %s\n" % message), res
    assert "<pybox>" not in res["stderr"], res
    # A submodule says the same; a module not on the allowlist is still refused as before.
    res = run(mode, server, tmp_path, "from fpdf import FPDF\n")
    assert res["error"]["message"] == message, res
    res = run(mode, server, tmp_path, "import fpdf2\n")
    assert res["status"] == "rejected" and res["error"]["disallowed"] == ["fpdf2"], res
