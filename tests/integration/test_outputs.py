"""Rich results: `outputs` in the result object of POST /v1/execute and `pybox run --json`.

display() in the sandbox's builtins and the repr protocol (_repr_mimebundle_, _repr_html_,
_repr_png_, _repr_svg_, _repr_json_), PIL images, pandas tables with bounded rows,
matplotlib figures shown with plt.show() or left open, in the order produced, and the caps on
each output and on their total (docs/api.md, "The result object").
"""
import base64
import json
import struct
import subprocess

import pytest

from conftest import PYBOX, SLOW, body_of, clean_env

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(module_start_server):
    return module_start_server("--rpm", "100000", "--rpd", "1000000", preload=True)


def execute(server, code, **extra):
    body = dict({"code": code, "timeout": 10}, **extra)
    r = server.v1(body)
    assert r.status_code == 200, r.text
    return body_of(r)


def local(tmp_path, code, *args):
    """`pybox run --json` of `code`, preloading as the server does: the result object."""
    (tmp_path / "main.py").write_text(code)
    p = subprocess.run([PYBOX, "run", "main.py", "--json", "--preload", "--timeout", "30"]
                       + list(args), cwd=tmp_path, capture_output=True, timeout=120 * SLOW,
                       env=clean_env())
    lines = p.stdout.decode().splitlines()
    assert lines, (p.returncode, p.stderr)
    return json.loads(lines[0])


def png_size(b64):
    """The width and height of a PNG given in base64, from its IHDR chunk."""
    data = base64.b64decode(b64, validate=True)
    assert data[:8] == PNG and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def omitted(o):
    return o["metadata"].get("omitted") is True and \
        o["data"]["text/plain"].startswith("[output omitted: ")


def test_no_outputs_is_an_empty_list(server):
    d = execute(server, "print('hi')\n")
    assert d["status"] == "ok" and d["outputs"] == [], d


def test_display_and_the_repr_protocol_in_order(server):
    code = '''
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": "bundle", "text/html": "<i>b</i>"}, {"text/html": {"isolated": True}}
class Rich:
    def _repr_html_(self): return "<b>rich</b>"
    def _repr_svg_(self): return "<svg xmlns='http://www.w3.org/2000/svg'/>"
    def _repr_json_(self): return {"k": [1, 2]}
    def __repr__(self): return "Rich()"
class Broken:
    def _repr_html_(self): raise ValueError("no")
    def __repr__(self): return "Broken()"
display("first", 42)
print("between")
display(Bundle(), Rich(), Broken())
from PIL import Image
display(Image.new("RGB", (7, 5), "red"))
'''
    d = execute(server, code)
    assert d["status"] == "ok", d
    assert d["stdout"] == "between\n", d
    outs = d["outputs"]
    assert [o["type"] for o in outs] == ["display"] * 6, outs
    assert [o["data"]["text/plain"] for o in outs[:5]] == \
        ["'first'", "42", "bundle", "Rich()", "Broken()"], outs
    assert outs[2]["data"]["text/html"] == "<i>b</i>"
    assert outs[2]["metadata"] == {"text/html": {"isolated": True}}
    assert outs[3]["data"] == {"text/plain": "Rich()", "text/html": "<b>rich</b>",
                               "image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg'/>",
                               "application/json": {"k": [1, 2]}}, outs[3]
    assert outs[4]["data"] == {"text/plain": "Broken()"}, outs[4]
    assert png_size(outs[5]["data"]["image/png"]) == (7, 5)
    assert outs[5]["data"]["text/plain"].startswith("<PIL.Image.Image image mode=RGB size=7x5")


def test_pandas_tables_are_html_with_bounded_rows(server):
    code = ("import pandas as pd\n"
            "df = pd.DataFrame({'n': range(1000), 'sq': [i * i for i in range(1000)]})\n"
            "display(df)\ndisplay(df['n'].head(3))\n")
    d = execute(server, code)
    assert d["status"] == "ok", d
    table, series = d["outputs"]
    html = table["data"]["text/html"]
    assert html.startswith("<table") and "1000 rows × 2 columns" in html, html[-200:]
    assert html.count("<tr") <= 70, html.count("<tr")
    assert len(table["data"]["text/plain"].splitlines()) <= 70
    assert "<table" in series["data"]["text/html"] and "text/plain" in series["data"]


def test_ipython_display_module_for_notebook_code(server):
    code = ("from IPython.display import display, HTML, SVG, JSON, Markdown, Image\n"
            "import io\nfrom PIL import Image as P\n"
            "buf = io.BytesIO(); P.new('RGB', (3, 2)).save(buf, format='PNG')\n"
            "display(HTML('<b>x</b>'), JSON({'a': 1}), Markdown('# hi'))\n"
            "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"/>'), Image(buf.getvalue()))\n"
            "try:\n    Image(url='http://example.com/x.png')\n"
            "except ValueError as e:\n    print('refused:', e)\n")
    d = execute(server, code)
    assert d["status"] == "ok", d
    data = [o["data"] for o in d["outputs"]]
    assert data[0] == {"text/plain": "<IPython.display.HTML object>", "text/html": "<b>x</b>"}
    assert data[1]["application/json"] == {"a": 1}
    assert data[2] == {"text/plain": "# hi"}
    assert data[3]["image/svg+xml"].startswith("<svg")
    assert png_size(data[4]["image/png"]) == (3, 2)
    assert d["stdout"].startswith("refused: the sandbox has no network"), d["stdout"]


def test_matplotlib_show_and_figures_left_open(server):
    code = '''
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
ax.plot([1, 2, 3], [3, 1, 2])
plt.show()
plt.show()
fig2 = plt.figure(figsize=(2, 1), dpi=50)
plt.plot([1, 2])
fig2.savefig("saved.png")
print("open", plt.get_fignums())
'''
    d = execute(server, code, return_files=["saved.png"])
    assert d["status"] == "ok", d
    assert d["stdout"] == "open [1]\n", d
    shown, left = d["outputs"]
    assert png_size(shown["data"]["image/png"]) == (400, 300)
    assert shown["metadata"] == {"image/png": {"width": 400, "height": 300}}
    assert shown["data"]["text/plain"] == "<Figure size 400x300 with 1 Axes>"
    assert png_size(left["data"]["image/png"]) == (100, 50)
    saved = base64.b64decode(d["files"]["saved.png"]["content_base64"])
    assert saved[:8] == PNG
    assert d["stderr"] == "", d["stderr"]


def test_figures_left_open_by_an_error_come_back(server):
    d = execute(server, "import matplotlib.pyplot as plt\nplt.plot([1])\n1 / 0\n")
    assert d["status"] == "error" and d["error"]["type"] == "ZeroDivisionError", d
    assert len(d["outputs"]) == 1 and "image/png" in d["outputs"][0]["data"], d["outputs"]


def test_main_value_stays_result(server):
    """main()'s value is `result`, as before, and no output of type "result" repeats it."""
    d = execute(server, "def main():\n    display('shown')\n    return {'v': 1}\n", main=True)
    assert d["status"] == "ok" and d["result"] == {"v": 1}, d
    assert [o["data"]["text/plain"] for o in d["outputs"]] == ["'shown'"], d["outputs"]


def test_caps_on_each_output_their_count_and_their_total(tmp_path):
    """The bootstrap keeps within the supervisor's caps: a marker for an output over its size
    or past the total, the last of 1000 outputs a marker, and main()'s value gets what the
    outputs left (an answer limit of 3 MiB leaves 1 MiB after the 1 MiB of stdout and of
    stderr)."""
    d = local(tmp_path, "class H:\n    def _repr_html_(self): return 'h' * (2 << 20)\n"
              "display(H(), 'small')\n", "--limit", "answer=3M")
    assert d["status"] == "ok", d
    assert omitted(d["outputs"][0]) and "over 1048576 bytes" in \
        d["outputs"][0]["data"]["text/plain"], d["outputs"][0]
    assert d["outputs"][1]["data"]["text/plain"] == "'small'"
    d = local(tmp_path, "for i in range(3):\n    display('x' * 400000)\n", "--limit", "answer=3M")
    assert [omitted(o) for o in d["outputs"]] == [False, False, True], d["outputs"]
    assert "all outputs may carry" in d["outputs"][2]["data"]["text/plain"]
    d = local(tmp_path, "def main():\n    display('x' * 900000)\n    return 'y' * 200000\n",
              "--main", "--limit", "answer=3M")
    assert d["status"] == "error" and d["error"]["type"] == "ResultNotSerializable", d
    assert not omitted(d["outputs"][0])
    d = local(tmp_path, "for i in range(1200):\n    display(i)\n")
    assert len(d["outputs"]) == 1000, len(d["outputs"])
    assert [o["data"]["text/plain"] for o in d["outputs"][:3]] == ["0", "1", "2"]
    assert omitted(d["outputs"][-1]) and "1000 outputs" in d["outputs"][-1]["data"]["text/plain"]
