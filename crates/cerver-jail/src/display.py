# Rich results of a run ("display outputs"), loaded by the zygote as the module `cerver_display`.
#
# A run's main process writes them as JSON lines to its own results pipe (a descriptor the
# zygote received with the run, never stdout), so printing can never forge one:
#   {"type": "result", "text": ..., "html": ..., "png": <base64>, ..., "is_main_result": bool}
#   {"type": "error", "name": ..., "value": ..., "traceback": ...}
# User code may write to that descriptor itself; it can only add results to its own run, and the
# server validates and bounds every line (cerver-runtime/src/results.rs). The bounds here only
# avoid writing what the server would drop anyway.
#
# Kept cheap for runs without results: no import at zygote start beyond what the zygote has, and
# nothing happens in a run unless it displays something, ends on an expression, raised, or
# imported matplotlib.pyplot (figures still open become PNG results; without a display,
# matplotlib renders with its Agg backend on its own, so no MPLBACKEND is set).

import json
import os
import sys

MAX_RESULTS = 32
MAX_BYTES = 8 << 20
MAX_TRACEBACK = 64 << 10

# representation name -> the method IPython looks for
FORMATS = (("html", "_repr_html_"), ("markdown", "_repr_markdown_"), ("svg", "_repr_svg_"),
           ("png", "_repr_png_"), ("jpeg", "_repr_jpeg_"), ("latex", "_repr_latex_"),
           ("json", "_repr_json_"))
MIME = {"text/plain": "text", "text/html": "html", "text/markdown": "markdown",
        "image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpeg",
        "text/latex": "latex", "application/json": "json"}

_state = {"fd": None, "count": 0, "bytes": 0, "figures": set()}


def _open(fd):
    """Called by the zygote in the run's main process with the results descriptor."""
    _state.update(fd=fd, count=0, bytes=0, figures=set())


def _write(obj):
    fd = _state["fd"]
    if fd is None:
        return
    try:
        data = (json.dumps(obj, default=str) + "\n").encode("utf-8", "backslashreplace")
    except (TypeError, ValueError):
        return
    if obj.get("type") == "result":
        if _state["count"] >= MAX_RESULTS or _state["bytes"] + len(data) > MAX_BYTES:
            _state["count"] = MAX_RESULTS  # the server adds the truncation marker
            data = b'{"type":"truncated"}\n'
        else:
            _state["count"] += 1
            _state["bytes"] += len(data)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        _state["fd"] = None  # nobody reads them (a background process): stop trying


def _b64(value):
    import base64
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _figure_png(fig):
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _is_figure(obj):
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


def bundle(obj):
    """Every representation `obj` offers, as the result's fields (plus `text`, its repr)."""
    out = {}
    if _is_figure(obj):
        try:
            out["png"] = _b64(_figure_png(obj))
            _state["figures"].add(id(obj))
        except Exception:
            pass
    mimebundle = getattr(obj, "_repr_mimebundle_", None)
    if callable(mimebundle) and not isinstance(obj, type):
        try:
            data = mimebundle()
            data = data[0] if isinstance(data, tuple) else data
            for mime, value in (data or {}).items():
                key = MIME.get(mime)
                if key and key not in out:
                    out[key] = _convert(key, value)
        except Exception:
            pass
    for key, method in FORMATS:
        f = getattr(obj, method, None)
        if key in out or not callable(f) or isinstance(obj, type):
            continue
        try:
            value = f()
        except Exception:
            continue
        if isinstance(value, tuple):  # (data, metadata), as IPython allows
            value = value[0] if value else None
        if value is not None:
            out[key] = _convert(key, value)
    if "text" not in out:
        try:
            out["text"] = repr(obj)
        except Exception as e:
            out["text"] = f"<repr failed: {type(e).__name__}>"
    return out


def _convert(key, value):
    if key in ("png", "jpeg"):
        return _b64(value)
    if key == "json":
        if isinstance(value, (str, bytes)):
            try:
                return json.loads(value)
            except ValueError:
                return str(value)
        return value
    return value if isinstance(value, str) else str(value)


def publish(obj, main=False):
    result = bundle(obj)
    result["type"] = "result"
    result["is_main_result"] = main
    _write(result)


def display(*objs, **_kwargs):
    """Shows each object as a result of the run (as IPython's `display`)."""
    for obj in objs:
        publish(obj)


def main_result(value):
    if value is not None:
        publish(value, main=True)


def error(exc):
    tb = exc.__traceback__
    try:
        import traceback
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        text = ""
    try:
        value = str(exc)
    except Exception:
        value = ""
    _write({"type": "error", "name": type(exc).__name__, "value": value[:MAX_TRACEBACK],
            "traceback": text[-MAX_TRACEBACK:]})


def figures():
    """matplotlib figures still open at the end of the run (or shown, which on a non-GUI
    backend leaves them open) become PNG results, then are closed. Only if the user imported
    pyplot: matplotlib is never imported here."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            if id(fig) not in _state["figures"]:
                _write({"type": "result", "png": _b64(_figure_png(fig)),
                        "text": repr(fig), "is_main_result": False})
        plt.close("all")
    except Exception:
        pass


# ------------------------------------------------------------ IPython.display-style objects

class _Shown:
    """A value shown as one representation (HTML(...), Markdown(...), ...)."""
    _key = "text"

    def __init__(self, data=None, url=None, filename=None, **_kwargs):
        if data is None and filename is not None:
            mode = "rb" if self._key in ("png", "jpeg") else "r"
            with open(filename, mode) as f:
                data = f.read()
        self.data = data if data is not None else url

    def __repr__(self):
        return f"<{type(self).__name__} object>"


def _shown(name, key):
    def method(self):
        return self.data
    return type(name, (_Shown,), {"_key": key, f"_repr_{key}_": method})


HTML = _shown("HTML", "html")
Markdown = _shown("Markdown", "markdown")
SVG = _shown("SVG", "svg")
Latex = _shown("Latex", "latex")
JSON = _shown("JSON", "json")


class Image(_Shown):
    """An image from bytes or a file; `format` "png" (default) or "jpeg"."""

    def __init__(self, data=None, url=None, filename=None, format=None, **kwargs):
        fmt = (format or (filename or "").rsplit(".", 1)[-1] or "png").lower()
        self._key = "jpeg" if fmt in ("jpg", "jpeg") else "png"
        super().__init__(data, url, filename, **kwargs)

    def _repr_png_(self):
        return self.data if self._key == "png" else None

    def _repr_jpeg_(self):
        return self.data if self._key == "jpeg" else None


class _IPythonShim:
    """A last-resort importer: `from IPython.display import display, HTML` works when IPython
    is not installed (it sits at the end of sys.meta_path, so a real IPython always wins)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in ("IPython", "IPython.display"):
            return None
        import importlib.machinery
        return importlib.machinery.ModuleSpec(name, cls, is_package=(name == "IPython"))

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        me = sys.modules[__name__]
        for name in ("display", "HTML", "Markdown", "SVG", "Latex", "JSON", "Image"):
            setattr(module, name, getattr(me, name))
        if module.__name__ == "IPython":
            module.__path__ = []


def install():
    """Per run, in the main process: `display` as a builtin and the IPython.display shim."""
    import builtins
    builtins.display = display
    sys.meta_path.append(_IPythonShim)
