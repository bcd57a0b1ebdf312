# pybox job bootstrap: embedded in the pybox binary and loaded once by the
# zygote as the module "_pybox".  The zygote calls prepare(); every job calls
# run() after fork, inside the finished sandbox (unprivileged uid, seccomp,
# its own namespaces).  Nothing here is a security boundary: the import
# allowlist is policy and an early error, the wall is the kernel sandbox.
import array
import ast
import builtins
import base64
import gc
import importlib.machinery
import io
import itertools
import json
import linecache
import os
import random
import re
import sys
import traceback
import types

_META_FD = 3
_ALLOWED = frozenset()
_real_import = builtins.__import__
_USER_FILE = "main.py"


class ForbiddenImportError(ImportError):
    """Raised when user code imports a module outside the allowlist."""


# Shown as "ForbiddenImportError", like a built-in exception, in tracebacks.
ForbiddenImportError.__module__ = "builtins"

# How many modules, and how many characters of them, the refusal's hint names.
_HINT_MODULES = 8
_HINT_CHARS = 200


def _refusal(names, more=0):
    """The one-line message of a ForbiddenImportError: the modules refused (`more` beyond
    them), and how each way of running pybox allows them.  Relative imports cannot be
    allowed, so they get no hint."""
    msg = "import of %s not allowed" % ", ".join("'%s'" % n for n in names)
    if more:
        msg += " (and %d more)" % more
    absolute = [n for n in names if not n.startswith(".")]
    if not absolute:
        return msg
    mods = ",".join(absolute)
    if more or len(absolute) > _HINT_MODULES or len(mods) > _HINT_CHARS:
        mods = "MODULES"
    return ("%s; to allow %s: an API key made with "
            "`pybox keys create --name NAME --modules %s`, `pybox serve --modules %s` for "
            "anonymous callers, or `pybox run --allow-all-imports` locally"
            % (msg, "it" if len(absolute) == 1 and not more else "them", mods, mods))


def _meta(record):
    data = (json.dumps(record, allow_nan=False) + "\n").encode()
    try:
        while data:
            n = os.write(_META_FD, data)
            data = data[n:]
    except OSError:
        pass


class _NotInstalled:
    """The last finder on sys.meta_path: an allowlisted top-level module that no other finder
    found is allowed but not installed here (fpdf: Debian 12 does not package it).  Saying so
    beats "No module named 'fpdf'", which reads as a typo or a refusal."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is None and name in _ALLOWED:
            raise ModuleNotFoundError("%s is allowed but not installed on this server" % name,
                                      name=name)
        return None


def prepare(preload, allowed):
    """Run once in the zygote: import what jobs need (preload, a list of module names, may be
    empty), then freeze the heap."""
    global _ALLOWED
    _ALLOWED = frozenset(allowed)
    sys.argv = [_USER_FILE]
    sys.dont_write_bytecode = True
    for name in preload:
        try:
            __import__(name)
        except Exception:
            pass
    _count_streams()
    sys.meta_path.append(_IPythonShim)
    sys.meta_path.append(_NotInstalled)
    builtins.display = display
    _patch_pyplot()
    # Objects inherited from the zygote are never collected or copied by the
    # collector: fewer copy-on-write faults in every job.
    gc.collect()
    gc.freeze()


def _top(name):
    return name.split(".", 1)[0]


def _disallowed(tree):
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")] if node.level else [node.module or ""]
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            callee = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
            arg = node.args[0]
            if callee in ("__import__", "import_module") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                names = [arg.value]
            else:
                continue
        else:
            continue
        for name in names:
            if name.startswith(".") or _top(name) not in _ALLOWED:
                found.add(name if name.startswith(".") else _top(name))
    return sorted(found)


def _is_user_file(name):
    # main.py, or a session's cell ("<cell 3>").
    return name == _USER_FILE or name.startswith("<cell ")


def _from_user_code(depth):
    # An import is the user's when main.py made it, or code that main.py
    # compiled at run time (exec, eval, compile): any code not from a module
    # file of the Python install, with main.py further up the stack.
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return False
    name = frame.f_code.co_filename
    if _is_user_file(name):
        return True
    if not name.startswith("/") and not name.startswith("<frozen"):
        frame = frame.f_back
        while frame is not None:
            if _is_user_file(frame.f_code.co_filename):
                return True
            frame = frame.f_back
    return False


def _check_runtime(name, level):
    if level:
        raise ForbiddenImportError("relative imports are not allowed in main.py")
    top = _top(name)
    if top not in _ALLOWED:
        err = ForbiddenImportError(_refusal([top]))
        err.name = top
        raise err


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if _from_user_code(2):
        _check_runtime(name, level)
    return _real_import(name, globals, locals, fromlist, level)


def _guard_imports():
    if builtins.__import__ is _guarded_import:
        return  # a session's later calls
    builtins.__import__ = _guarded_import
    import importlib
    real_import_module = importlib.import_module

    def import_module(name, package=None):
        if _from_user_code(2):
            _check_runtime(name, 1 if name.startswith(".") else 0)
        return real_import_module(name, package)

    importlib.import_module = import_module


def _reseed():
    # The after-fork hooks reseed random already; seeding again from the
    # kernel costs little and does not depend on them.
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        # The whole Mersenne Twister key (624 words) straight from the kernel:
        # full entropy, and a third of the copy-on-write faults of seed().
        try:
            key = np.frombuffer(os.urandom(2496), dtype=np.uint32)
            np.random.mtrand._rand._bit_generator.state = {
                "bit_generator": "MT19937", "state": {"key": key, "pos": 624}}
        except Exception:
            np.random.seed()


def _user_tb(tb):
    # Drop the bootstrap's own frames: tracebacks start in main.py.
    while tb is not None and not _is_user_file(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def _without_bootstrap(te):
    # Hide the bootstrap's own frames (the import guard) from every traceback of the chain.
    seen = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if f.filename != "<pybox>"])
        te = te.__cause__ or te.__context__


def _error_record(exc):
    tb = _user_tb(exc.__traceback__)
    te = traceback.TracebackException(type(exc), exc, tb)
    _without_bootstrap(te)
    text = "".join(te.format())
    record = {"type": type(exc).__name__, "message": str(exc), "traceback": text}
    if isinstance(exc, ForbiddenImportError):
        record["type"] = "ForbiddenImportError"
        if getattr(exc, "name", None):
            record["disallowed"] = [exc.name]
    if tb is not None:
        last = tb
        while last.tb_next is not None and _is_user_file(last.tb_next.tb_frame.f_code.co_filename):
            last = last.tb_next
        record["line"] = last.tb_lineno
    return record, text


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _shutdown(module):
    # What python3 does at exit for the user's objects: run atexit callbacks,
    # then drop the module's globals so files left open are flushed and closed.
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        pass
    try:
        module.__dict__.clear()
        gc.collect()
    except BaseException:
        pass


# The supervisor parses main()'s value with jansson (src/engine/meta.c), which
# refuses what Python's json writes for integers beyond 64 bits, lone
# surrogates, NUL in object keys, keys that are the same string ({1: .., "1": ..})
# and more than 2048 levels of values.  Such a value is main()'s error here,
# with exit status 1: the supervisor never turns a record into an error itself.
# The tests are cheap scans of the text first, the exact ones only when a scan
# finds something.
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_MAX_DISALLOWED = 1000
_MAX_NESTING = 2047  # arrays and objects, plus the value innermost: 2048
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
# An integer of 19 digits or more: not after a point, where a float's repr may have 20.
_LONG_INT = re.compile(r"(?<![0-9.])-?[0-9]{19,}")
_DIGITS = bytes(48 if 48 <= c <= 57 else 32 for c in range(256))  # digits to "0", the rest " "
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[{]}")


class _Uncarriable(ValueError):
    """main() returned JSON that pybox cannot carry."""


def _object_pairs(pairs):
    keys = set()
    for key, _ in pairs:
        if "\x00" in key:
            raise _Uncarriable("an object key with a NUL character")
        if key in keys:
            raise _Uncarriable("two object keys that are the same string %r" % key)
        keys.add(key)


def _mixed_keys(value):
    # Two keys write the same string only when one dict has keys of two types
    # (1 and "1", True and "true"), and then sorting its keys fails.
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False, sort_keys=True)
    except TypeError:
        return True
    return False


def _nesting(bare):
    steps = array.array("b", bare.encode("ascii").translate(_BRACKETS, _NOT_BRACKETS))
    return max(itertools.accumulate(steps), default=0)


def _values(data, bare):
    """An upper bound of the values in JSON text, counted as the supervisor counts them."""
    if bare is not None:
        data = bare.encode("utf-8")
    return 1 + sum(data.count(c) for c in (b",", b":", b"[", b"{"))


def _result_text(value, max_bytes, max_values, max_nesting=_MAX_NESTING):
    """main()'s value as JSON text the supervisor can parse, or ValueError."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Uncarriable("a string with a lone surrogate") from None
    if len(data) > max_bytes:
        raise _Uncarriable("%d bytes of JSON; at most %d may come back (the answer limit)"
                           % (len(data), max_bytes))
    bare = None
    if _values(data, None) > max_values:
        # Commas and colons inside strings are not values: count without the strings.
        bare = _JSON_STRING.sub('""', text)
        if _values(data, bare) > max_values:
            raise _Uncarriable("more than %d values; at most one per 64 bytes of the answer "
                               "limit may come back" % max_values)
    if b"0" * 19 in data.translate(_DIGITS):
        # The text with every string emptied: its structure and numbers only.
        if bare is None:
            bare = _JSON_STRING.sub('""', text)
        for m in _LONG_INT.finditer(bare):
            if not _INT64_MIN <= int(m.group()) <= _INT64_MAX:
                raise _Uncarriable("an integer beyond 64 bits")
    if b"{" in data and (b"\\u0000" in data or _mixed_keys(value)):
        json.loads(text, object_pairs_hook=_object_pairs)
    if data.count(b"[") + data.count(b"{") > max_nesting:
        if bare is None:
            bare = _JSON_STRING.sub('""', text)
        if _nesting(bare) > max_nesting:
            raise _Uncarriable("more than %d levels of arrays and objects" % max_nesting)
    return text


# Rich outputs: one record each on fd 3, {"output": {"type", "data", "metadata"}}, in the order
# produced (src/engine/meta.h).  The supervisor keeps them within pbx_limits_outputs_max(),
# whose caps are these: a record of at most _OUTPUT_MAX bytes (or the room, when smaller), at
# most _MAX_OUTPUTS of them, all of them together taking from main()'s room.  What would break
# a cap comes back as a marker instead, so nothing is left out without a word.
_OUTPUT_MAX = 4 << 20
_MAX_OUTPUTS = 1000
_OUTPUT_NESTING = 24  # application/json values, inside the record's 32 levels
_OUTPUT_VALUES = 60000  # a record holds at most 65536 values
_TABLE_ROWS = 60  # rows of a DataFrame or Series shown
_TABLE_COLS = 20
_outputs = {"room": 0, "used": 0, "count": 0, "full": False}


def _marker(why):
    return {"type": "display", "data": {"text/plain": "[output omitted: %s]" % why},
            "metadata": {"omitted": True}}


# What "at" adds to a record at most: ', "at": [N, N]' with two 20-digit counts.
_AT_MAX = 52


class _Counted(io.FileIO):
    """fd 1 or 2 under sys.stdout or sys.stderr, counting the bytes written through it: each
    output record says how many of each came before it, so the supervisor can hand them on
    in the order the code wrote them (what is written to the fds by other means is not
    counted, and may come after an output it preceded)."""
    written = 0

    def write(self, b):
        n = io.FileIO.write(self, b)
        if n:
            self.written += n
        return n


_counted = []


def _count_streams():
    """In the zygote: sys.stdout and sys.stderr over _Counted raw files, as they were."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        try:
            raw = _Counted(fd, "w", closefd=False)
            new = io.TextIOWrapper(io.BufferedWriter(raw), encoding=old.encoding,
                                   errors=old.errors, line_buffering=old.line_buffering,
                                   write_through=old.write_through)
        except (OSError, ValueError, AttributeError):
            return
        setattr(sys, name, new)
        _counted.append(raw)


def _count_from_zero():
    for raw in _counted:
        raw.written = 0


def _write_line(line):
    """Write one output record's JSON text (ASCII) as a line, counted as the supervisor
    counts it.  What the code printed before it goes out first, and the record says how much
    that was ("at"), so that a reader of both keeps them in their order."""
    _flush()
    if len(_counted) == 2:
        line = '%s, "at": [%d, %d]}' % (line[:-1], _counted[0].written, _counted[1].written)
    _outputs["used"] += len(line)
    _outputs["count"] += 1
    data = (line + "\n").encode()
    try:
        while data:
            data = data[os.write(_META_FD, data):]
    except OSError:
        pass


def _record(output):
    return json.dumps({"output": output}, allow_nan=False)


def _emit(output):
    """Write one output record, or a marker in its place when it is over a cap."""
    st = _outputs
    if st["full"]:
        return
    if st["count"] >= _MAX_OUTPUTS - 1:
        st["full"] = True
        _write_line(_record(_marker("no more than %d outputs come back" % _MAX_OUTPUTS)))
        return
    try:
        line = _record(output)
    except (TypeError, ValueError, RecursionError):
        output = {"type": output["type"], "data": {"text/plain": output["data"]["text/plain"]},
                  "metadata": {}}
        line = _record(output)
    each = min(_OUTPUT_MAX, st["room"])
    if len(line) + _AT_MAX > each:
        line = _record(_marker("over %d bytes" % each))
    elif st["used"] + len(line) + _AT_MAX > st["room"]:
        line = _record(_marker("over the %d bytes all outputs may carry" % st["room"]))
    _write_line(line)


def _text(value):
    """A str the supervisor's JSON parser takes: no NUL, no lone surrogate."""
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _json_value(value):
    """value as application/json carries it, or None when it cannot come back."""
    try:
        return json.loads(_result_text(value, _OUTPUT_MAX, _OUTPUT_VALUES, _OUTPUT_NESTING))
    except (_Uncarriable, TypeError, ValueError, RecursionError):
        return None


def _png(value):
    if isinstance(value, tuple) and value:
        value = value[0]
    if isinstance(value, (bytes, bytearray, memoryview)) and bytes(value[:8]) == b"\x89PNG\r\n\x1a\n":
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str):
        # Already base64 (as IPython's formatters accept it): kept if it is a PNG.
        try:
            if base64.b64decode(value, validate=True)[:8] == b"\x89PNG\r\n\x1a\n":
                return value
        except ValueError:
            pass
    return None


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _call(obj, name, **kwargs):
    if isinstance(obj, type) or getattr(type(obj), name, None) is None:
        return None
    try:
        return getattr(obj, name)(**kwargs)
    except Exception:
        return None


def _mime_bundle(obj):
    """obj's MIME bundle and metadata, as IPython's display() makes them."""
    data = {}
    metadata = {}
    bundle = _call(obj, "_repr_mimebundle_", include=None, exclude=None)
    if isinstance(bundle, tuple) and len(bundle) == 2:
        bundle, md = bundle
        if isinstance(md, dict):
            metadata.update(md)
    if isinstance(bundle, dict):
        data.update(bundle)
    mod = type(obj).__module__ or ""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        frame = obj if isinstance(obj, pd.DataFrame) else obj.to_frame()
        try:
            data.setdefault("text/html", frame.to_html(max_rows=_TABLE_ROWS, max_cols=_TABLE_COLS,
                                                       show_dimensions=True))
            data.setdefault("text/plain", obj.to_string(max_rows=_TABLE_ROWS) if
                            isinstance(obj, pd.Series) else
                            obj.to_string(max_rows=_TABLE_ROWS, max_cols=_TABLE_COLS,
                                          show_dimensions=True))
        except Exception:
            pass
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(obj, pil.Image) and "image/png" not in data:
        try:
            buf = io.BytesIO()
            obj.save(buf, format="PNG")
            data["image/png"] = buf.getvalue()
            metadata.setdefault("image/png", {"width": obj.width, "height": obj.height})
        except Exception:
            pass
    if mod.startswith("matplotlib.figure") and "image/png" not in data:
        try:
            data["image/png"] = _figure_png(obj)
        except Exception:
            pass
    for mime, name in (("text/html", "_repr_html_"), ("image/png", "_repr_png_"),
                       ("image/svg+xml", "_repr_svg_"), ("application/json", "_repr_json_")):
        if mime not in data:
            value = _call(obj, name)
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
                value, md = value
                metadata[mime] = md
            if value is not None:
                data[mime] = value
    return data, metadata


def _repr(obj):
    try:
        return repr(obj)
    except Exception:
        return object.__repr__(obj)


def _output(obj, kind="display", metadata=None):
    """The output record of obj: its MIME bundle made carriable."""
    data, md = _mime_bundle(obj)
    out = {}
    plain = _text(data.get("text/plain")) if "text/plain" in data else None
    out["text/plain"] = plain if plain is not None else _text(_repr(obj))
    for mime in ("text/html", "image/svg+xml"):
        text = _text(data.get(mime))
        if text is not None:
            out[mime] = text
    if "image/png" in data:
        png = _png(data["image/png"])
        if png is not None:
            out["image/png"] = png
    if "application/json" in data:
        value = data["application/json"]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        value = _json_value(value) if value is not None else None
        if value is not None:
            out["application/json"] = value
    if metadata:
        md.update(metadata)
    return {"type": kind, "data": out, "metadata": _json_value(md) or {}}


def display(*objs, metadata=None, **kwargs):
    """Show each object as a rich output of the result (the MIME types of its repr methods,
    as IPython's display() does): text/plain always, with text/html, image/png,
    image/svg+xml or application/json when it has them."""
    for obj in objs:
        _emit(_output(obj, metadata=metadata if isinstance(metadata, dict) else None))


# IPython.display, for code written for a notebook: when IPython itself is not installed,
# `from IPython.display import display, HTML, Image` finds these.
class _DisplayObject:
    """The data of one of IPython.display's objects, from `data` or a file in /work."""
    _mime = "text/plain"
    _binary = False

    def __init__(self, data=None, url=None, filename=None, metadata=None, **kwargs):
        if filename is not None:
            with open(filename, "rb" if self._binary else "r") as f:
                data = f.read()
        elif url is not None and data is None:
            raise ValueError("the sandbox has no network: give the data or a filename")
        self.data = data
        self.metadata = metadata or {}

    def __repr__(self):
        return "<IPython.display.%s object>" % type(self).__name__

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {self._mime: self.data, "text/plain": repr(self)}, self.metadata


class _HTML(_DisplayObject):
    _mime = "text/html"


class _SVG(_DisplayObject):
    _mime = "image/svg+xml"

    def __init__(self, data=None, url=None, filename=None, metadata=None, **kwargs):
        _DisplayObject.__init__(self, data, url, filename, metadata)
        if isinstance(self.data, bytes):
            self.data = self.data.decode("utf-8", "replace")


class _Markdown(_DisplayObject):
    _mime = "text/plain"

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": str(self.data)}, self.metadata


class _JSON(_DisplayObject):
    _mime = "application/json"


class _Image(_DisplayObject):
    _mime = "image/png"
    _binary = True

    def __init__(self, data=None, url=None, filename=None, format=None, width=None,
                 height=None, metadata=None, **kwargs):
        if isinstance(data, str) and filename is None and url is None:
            filename, data = data, None
        _DisplayObject.__init__(self, data, url, filename, metadata)
        if not isinstance(self.data, (bytes, bytearray)) or bytes(self.data[:8]) != _PNG_SIG:
            raise ValueError("IPython.display.Image in pybox carries PNG images only")
        if width or height:
            self.metadata = dict(self.metadata, **{"image/png": {
                k: v for k, v in (("width", width), ("height", height)) if v}})


def _clear_output(wait=False):
    """Nothing to clear: outputs are a list in the result."""


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _ipython_modules():
    display_mod = types.ModuleType("IPython.display")
    for name, value in (("display", display), ("HTML", _HTML), ("SVG", _SVG),
                        ("Markdown", _Markdown), ("JSON", _JSON), ("Image", _Image),
                        ("clear_output", _clear_output), ("DisplayObject", _DisplayObject)):
        if isinstance(value, type):
            value.__name__ = value.__qualname__ = name
            value.__module__ = "IPython.display"
        setattr(display_mod, name, value)
    root = types.ModuleType("IPython")
    root.display = display_mod
    root.__path__ = []
    root.get_ipython = lambda: None
    return {"IPython": root, "IPython.display": display_mod}


class _IPythonShim:
    """On sys.meta_path after the real finders: IPython and IPython.display when IPython
    is not installed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in ("IPython", "IPython.display"):
            return None
        return importlib.machinery.ModuleSpec(name, _IPythonShim, is_package=name == "IPython")

    @staticmethod
    def create_module(spec):
        return _ipython_modules()[spec.name] if spec.name == "IPython" else \
            sys.modules["IPython"].display

    @staticmethod
    def exec_module(module):
        pass


def _show(*args, **kwargs):
    """matplotlib.pyplot.show() in the sandbox: every open figure comes back once, as
    image/png, and is closed."""
    _flush_figures()


def _flush_figures():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        nums = plt.get_fignums()
    except Exception:
        return
    for num in nums:
        try:
            fig = plt.figure(num)
            png = _figure_png(fig)
            w, h = fig.get_size_inches() * fig.dpi
            plt.close(fig)
            output = {"type": "display",
                      "data": {"text/plain": _text(_repr(fig)), "image/png": _png(png)},
                      "metadata": {"image/png": {"width": int(round(w)),
                                                 "height": int(round(h))}}}
        except Exception:
            continue
        _emit(output)


def _patch_pyplot():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None and plt.show is not _show:
        plt.show = _show


class _PyplotHook:
    """On sys.meta_path when pyplot was not preloaded: once user code imports it, its show()
    becomes _show()."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            module.show = _show

        spec.loader.exec_module = exec_and_patch
        return spec


def _exit_code(exc):
    # SystemExit as the python3 command treats it.
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _reject(error, text):
    _meta({"check": "rejected", "error": error})
    try:
        sys.stderr.write(text)
    except Exception:
        pass
    _flush()
    return 1


def prepare_job():
    """In a spare job, before its code arrives: what every run would do first,
    and a dry run of the rest on a tiny program, so that most of the pages a run
    writes are copied before the code arrives rather than after."""
    _reseed()
    tree = ast.parse("import sys\nx = [str(i) for i in range(3)]\n", _USER_FILE)
    _disallowed(tree)
    json.dumps({"check": "ok"}, allow_nan=False)
    module = types.ModuleType("__main__")
    module.__builtins__ = builtins
    exec(compile(tree, _USER_FILE, "exec", dont_inherit=True), module.__dict__)
    json.dumps({"done": True, "exit_code": 0, "error": None}, allow_nan=False)
    module.__dict__.clear()
    linecache.cache.pop(_USER_FILE, None)


def _checked(code, allow_all, extra, filename):
    """Parse code as filename and check its imports: (tree, source lines), or (None, exit
    status) after the rejection's record.  The check record comes first, either way."""
    global _ALLOWED
    if extra:
        _ALLOWED = _ALLOWED | frozenset(extra.split())
    try:
        tree = ast.parse(code, filename)
    except SyntaxError as exc:
        error = {"type": type(exc).__name__, "message": exc.msg, "line": exc.lineno,
                 "offset": exc.offset, "traceback": None}
        text = "".join(traceback.format_exception_only(type(exc), exc))
        error["traceback"] = text
        return None, _reject(error, text)
    except (ValueError, MemoryError, RecursionError) as exc:
        text = "%s: %s\n" % (type(exc).__name__, exc)
        return None, _reject({"type": "SyntaxError", "message": str(exc), "line": None}, text)
    if not allow_all:
        bad = _disallowed(tree)
        if bad:
            # The first _MAX_DISALLOWED are named: the record stays a record the supervisor
            # reads (it skips lines of absurd size unparsed).
            named = bad[:_MAX_DISALLOWED]
            msg = _refusal(named, len(bad) - len(named))
            return None, _reject({"type": "ForbiddenImportError", "message": msg,
                                  "disallowed": named},
                                 "ForbiddenImportError: %s\n" % msg)
    _meta({"check": "ok"})

    if isinstance(code, bytes):
        try:
            source = code.decode("utf-8")
        except UnicodeDecodeError:
            source = code.decode("latin-1")
    else:
        source = code
    lines = source.splitlines(True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    return tree, lines


def _arm(allow_all, result_bytes):
    """What every run sets up just before the code: the import guard, the outputs' room,
    pyplot's show()."""
    if not allow_all:
        _guard_imports()
    _outputs.update(room=result_bytes, used=0, count=0, full=False)
    if "matplotlib.pyplot" in sys.modules:
        _patch_pyplot()
    elif _PyplotHook not in sys.meta_path:
        sys.meta_path.insert(0, _PyplotHook)


def _call_main(module, done, result_bytes, result_values, result_record):
    """main() mode: call the code's main() and put its JSON value in the done record."""
    fn = module.__dict__.get("main")
    if not callable(fn):
        done["error"] = {"type": "MainNotFound",
                         "message": "main() mode: the code defines no callable main()"}
        sys.stderr.write("MainNotFound: the code defines no callable main()\n")
        done["exit_code"] = 1
        return
    value = fn()
    # Figures left open come back before main()'s value, which gets what they
    # and the other outputs left of its room.
    _flush_figures()
    used = _outputs["used"]
    try:
        done["result"] = _result_text(value, max(result_bytes - used, 0), result_values)
        # The record escapes it again, as a JSON string: '"' takes two bytes.
        written = len(json.dumps(done["result"])) + 64
        if written > result_record - used:
            del done["result"]
            raise _Uncarriable("its record would be %d bytes; at most %d may come "
                               "back (the answer limit)"
                               % (written, max(result_record - used, 0)))
    except _Uncarriable as exc:
        done["error"] = {"type": "ResultNotSerializable",
                         "message": "main() returned a value pybox cannot carry "
                                    "as JSON: %s" % exc}
        sys.stderr.write("ResultNotSerializable: %s\n" % exc)
        done["exit_code"] = 1
    except (TypeError, ValueError, RecursionError) as exc:
        done["error"] = {"type": "ResultNotSerializable",
                         "message": "main() returned a value that is not valid "
                                    "JSON: %s" % exc}
        sys.stderr.write("ResultNotSerializable: %s\n" % exc)
        done["exit_code"] = 1


def _failed(done, exc):
    """The code raised exc: its traceback on stderr and in the done record."""
    if isinstance(exc, SystemExit):
        done["exit_code"] = _exit_code(exc)
        return
    record, text = _error_record(exc)
    try:
        sys.stderr.write(text)
    except Exception:
        pass
    done["error"] = record
    done["exit_code"] = 1


def _line_buffered():
    """stdout and stderr written at each newline: someone watches them live."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass


def run(code, main_mode, allow_all, extra, reseed, result_bytes, result_values, result_record,
        live=False):
    """Run user code as python3 runs main.py; returns the exit status.  main()'s value may be
    at most result_bytes of JSON holding at most result_values values, in a done record of at
    most result_record bytes (the cell passes what pbx_limits_result_max() says: the supervisor
    reads and parses no more).  With `live` (the output is streamed), stdout is line-buffered
    as on a terminal; else block-buffered, as python3's is into a pipe."""
    if reseed:
        _reseed()
    _count_from_zero()
    if live:
        _line_buffered()
    tree, lines = _checked(code, allow_all, extra, _USER_FILE)
    if tree is None:
        return lines

    module = types.ModuleType("__main__")
    module.__file__ = _USER_FILE
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [_USER_FILE]
    _arm(allow_all, result_bytes)
    done = {"done": True, "exit_code": 0, "error": None}
    try:
        compiled = compile(tree, _USER_FILE, "exec", dont_inherit=True)
        del tree
        exec(compiled, module.__dict__)
        if main_mode:
            _call_main(module, done, result_bytes, result_values, result_record)
    except BaseException as exc:
        _failed(done, exc)
    # Figures left open when the code ended (by an error too) come back once.
    _flush_figures()
    _shutdown(module)
    _flush()
    _meta(done)
    return done["exit_code"]


# A session's interpreter state: its __main__, kept from call to call.
_session = {"module": None}


def _suppressed(lines):
    """Whether the code ends with ';' (comments and blank lines aside): IPython's rule for
    not showing the final expression's value."""
    import tokenize
    last = None
    try:
        for tok in tokenize.generate_tokens(iter(lines).__next__):
            if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                last = tok
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def session_run(code, cell, main_mode, allow_all, extra, result_bytes, result_values,
                result_record):
    """One call of a session, as an IPython cell: the code runs in the session's __main__,
    kept from call to call, as "<cell N>"; the value of a final expression statement is the
    call's "result" output (a trailing ';' suppresses it) and `_` afterwards.  SystemExit
    ends the call with its status; the session lives on.  Returns the exit status."""
    filename = "<cell %d>" % cell
    tree, lines = _checked(code, allow_all, extra, filename)
    if tree is None:
        return lines
    module = _session["module"]
    if module is None:
        module = types.ModuleType("__main__")
        module.__builtins__ = builtins
        _session["module"] = module
    sys.modules["__main__"] = module
    # A session is watched as a REPL is: its output goes out at each newline.
    _line_buffered()
    _count_from_zero()
    # stdin is this call's: nothing read ahead from an earlier one survives.
    try:
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                     encoding="utf-8", errors="surrogateescape")
    except OSError:
        pass
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not _suppressed(lines):
        last = ast.Expression(tree.body.pop().value)
    _arm(allow_all, result_bytes)
    done = {"done": True, "exit_code": 0, "error": None}
    try:
        exec(compile(tree, filename, "exec", dont_inherit=True), module.__dict__)
        if last is not None:
            value = eval(compile(last, filename, "eval", dont_inherit=True), module.__dict__)
            if value is not None:
                builtins._ = value
                module.__dict__["_"] = value
                _emit(_output(value, kind="result"))
        if main_mode:
            _call_main(module, done, result_bytes, result_values, result_record)
    except BaseException as exc:
        _failed(done, exc)
    _flush_figures()
    _flush()
    _meta(done)
    return done["exit_code"]
