"""batos in-sandbox tool runner (Python 3.11, standard library only).

Runs inside gVisor as /opt/batos/runner.py. Protocol: stdin carries ONE JSON
object, stdout receives ONE JSON line, stderr is free text (tool prints,
tracebacks). Exit status is 0 whenever the JSON line was written; any other
status (or no JSON line) means the process was killed or the tool called
os._exit() itself.

Modes (see sandbox/README.md for the full contract):

  {"mode":"check","source":S,"function":F}
      -> {"ok":true} | {"ok":false,"error":"SyntaxError: ... (line N)"}
  {"mode":"test","source":S,"function":F,"tests":T}
      -> {"ok":bool,"passed":n,"failed":n,"skipped":n,
          "failures":[{"test":name,"error":traceback}], ["error":msg]}
  {"mode":"call","source":S,"function":F,"args":{...}}
      -> {"value":V} | {"command":{...}} | {"error":"Type: msg"}

The sandbox (gVisor, no network, read-only root, limits) is the security
boundary; this file only checks *structure* and never claims to make
untrusted code safe.
"""

import ast
import builtins
import io
import json
import linecache
import os
import sys
import traceback
import types

TOOL_FILE = "<tool>"
TESTS_FILE = "<tests>"
MAX_ERROR_CHARS = 8000      # per failure / error message
MAX_FAILURES = 50           # failures reported in full
DEFAULT_MAX_OUTPUT = 1 << 20  # bytes of reply JSON; request field "max_output_bytes" overrides


# --------------------------------------------------------------------------
# stdout protection: user code must not be able to corrupt the JSON channel
# by printing. The real stdout is moved to a private fd; fd 1 and sys.stdout
# now point at stderr.
# --------------------------------------------------------------------------
def _protect_stdout():
    try:
        sys.stdout.flush()
    except Exception:
        pass
    out_fd = os.dup(1)
    os.set_inheritable(out_fd, False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out_fd


def _encode(mode, reply, limit):
    """Serialise the reply once; oversized or non-JSON results become errors."""
    try:
        line = json.dumps(reply, ensure_ascii=True, allow_nan=False)
    except MemoryError:
        reply = None
        line = json.dumps(_error_reply(mode, "result too large: out of memory while encoding it"),
                          ensure_ascii=True)
    except (TypeError, ValueError, RecursionError, OverflowError) as e:
        reply = _error_reply(mode, "result is not JSON-serialisable: " + _short_error(e))
        line = json.dumps(reply, ensure_ascii=True)
    if len(line) > limit:
        size = len(line)
        line = None  # free it before building the error
        line = json.dumps(_error_reply(mode, "result too large: %d bytes of JSON (limit %d)"
                                       % (size, limit)), ensure_ascii=True)
    return line


def _emit(out_fd, line):
    data = (line + "\n").encode("ascii")
    while data:
        n = os.write(out_fd, data)
        data = data[n:]


def _clip(text, limit=MAX_ERROR_CHARS):
    if len(text) <= limit:
        return text
    return text[: limit - 40] + "\n... [%d chars truncated]" % (len(text) - limit + 40)


def _short_error(exc):
    msg = "%s: %s" % (type(exc).__name__, exc)
    return _clip(msg)


def _format_tb(exc, skip_runner_frames=True):
    """Traceback text without the runner's own frames."""
    tb = exc.__traceback__
    if skip_runner_frames:
        here = os.path.abspath(__file__) if "__file__" in globals() else None
        while tb is not None and here and os.path.abspath(tb.tb_frame.f_code.co_filename) == here:
            tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return _clip("".join(lines))


def _register_source(filename, source):
    # lets tracebacks show the offending line of "<tool>" / "<tests>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


# --------------------------------------------------------------------------
# structure check (never executes anything)
# --------------------------------------------------------------------------
class CheckError(Exception):
    pass


def _syntax_message(e):
    msg = "%s: %s" % (type(e).__name__, e.msg)
    if e.lineno is not None:
        msg += " (line %d" % e.lineno
        if e.offset:
            msg += ", column %d" % e.offset
        msg += ")"
    return msg


def _is_constant_expr(node):
    try:
        ast.literal_eval(node)
        return True
    except Exception:
        return False


def _is_main_guard(node):
    # `if __name__ == "__main__": ...` is tolerated; it never runs because the
    # tool executes with __name__ == "tool".
    if not isinstance(node, ast.If):
        return False
    t = node.test
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.ops) == 1
        and isinstance(t.ops[0], ast.Eq)
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def check_source(source, function, filename=TOOL_FILE):
    """Returns the compiled code object; raises CheckError with a readable message."""
    if not isinstance(source, str):
        raise CheckError("bad request: 'source' must be a string")
    if not isinstance(function, str) or not function.isidentifier():
        raise CheckError("bad request: 'function' must be a Python identifier")
    try:
        tree = ast.parse(source, filename=filename, mode="exec")
    except SyntaxError as e:  # includes IndentationError / TabError
        raise CheckError(_syntax_message(e))
    except (ValueError, MemoryError, RecursionError) as e:  # e.g. NUL bytes
        raise CheckError("SyntaxError: %s" % e)

    found = []
    for i, node in enumerate(tree.body):
        line = getattr(node, "lineno", "?")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.FunctionDef):
            if node.name == function:
                found.append(node)
            continue
        if isinstance(node, ast.AsyncFunctionDef):
            if node.name == function:
                raise CheckError(
                    "StructureError: '%s' must be a plain 'def', not 'async def' (line %s)"
                    % (function, line))
            continue
        if isinstance(node, ast.ClassDef):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            continue  # docstring / string literal
        if isinstance(node, ast.Assign):
            if all(isinstance(t, ast.Name) for t in node.targets) and _is_constant_expr(node.value):
                if any(t.id == function for t in node.targets):
                    raise CheckError("StructureError: '%s' is reassigned at top level (line %s)"
                                     % (function, line))
                continue
            raise CheckError(
                "StructureError: top-level assignment must bind a name to a literal constant "
                "(line %s)" % line)
        if isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.value is not None \
                    and _is_constant_expr(node.value):
                if node.target.id == function:
                    raise CheckError("StructureError: '%s' is reassigned at top level (line %s)"
                                     % (function, line))
                continue
            raise CheckError(
                "StructureError: top-level annotated assignment must bind a name to a literal "
                "constant (line %s)" % line)
        if _is_main_guard(node):
            continue
        raise CheckError(
            "StructureError: only imports, def/class, docstrings and constant assignments are "
            "allowed at top level; found %s (line %s)" % (type(node).__name__, line))

    if not found:
        raise CheckError("StructureError: no top-level function named '%s'" % function)
    if len(found) > 1:
        raise CheckError("StructureError: function '%s' is defined %d times (lines %s)" % (
            function, len(found), ", ".join(str(n.lineno) for n in found)))

    try:
        return compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as e:  # e.g. 'nonlocal' at module level
        raise CheckError(_syntax_message(e))
    except (ValueError, RecursionError, MemoryError) as e:
        raise CheckError("SyntaxError: %s" % e)


def _load_tool(source, function):
    """check + exec the tool in a fresh module named 'tool'. Returns (module, fn)."""
    code = check_source(source, function)
    _register_source(TOOL_FILE, source)
    mod = types.ModuleType("tool")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["tool"] = mod
    exec(code, mod.__dict__)
    fn = mod.__dict__.get(function)
    if not callable(fn):
        raise CheckError("StructureError: '%s' is not callable after import" % function)
    return mod, fn


# --------------------------------------------------------------------------
# a tiny pytest stand-in (pytest is not in the rootfs): raises, approx, fail,
# skip, mark.parametrize. Tests run in definition order.
# --------------------------------------------------------------------------
class _Skipped(Exception):
    pass


class _Failed(AssertionError):
    pass


def _make_pytest_shim():
    pt = types.ModuleType("pytest")

    class _RaisesContext:
        def __init__(self, expected, match):
            self.expected = expected
            self.match = match
            self.value = None
            self.type = None

        def __enter__(self):
            return self

        def __exit__(self, etype, evalue, tb):
            if etype is None:
                names = self.expected.__name__ if isinstance(self.expected, type) else \
                    " or ".join(t.__name__ for t in self.expected)
                raise _Failed("DID NOT RAISE %s" % names)
            if not issubclass(etype, self.expected):
                return False
            self.value = evalue
            self.type = etype
            if self.match is not None:
                import re
                if not re.search(self.match, str(evalue)):
                    raise _Failed("Regex pattern %r does not match %r" % (self.match, str(evalue)))
            return True

    def raises(expected, *args, match=None, **kwargs):
        ctx = _RaisesContext(expected, match)
        if args:
            func, rest = args[0], args[1:]
            with ctx:
                func(*rest, **kwargs)
            return ctx
        return ctx

    class _Approx:
        def __init__(self, expected, rel=None, abs=None):
            self.expected = expected
            self.rel = 1e-6 if rel is None else rel
            self.abs = 1e-12 if abs is None else abs

        def _close(self, a, b):
            if isinstance(b, (int, float)) and isinstance(a, (int, float)) \
                    and not isinstance(a, bool):
                if a == b:
                    return True
                return builtins.abs(a - b) <= max(self.rel * builtins.abs(b), self.abs)
            if isinstance(b, dict):
                return isinstance(a, dict) and a.keys() == b.keys() and all(
                    self._close(a[k], b[k]) for k in b)
            if isinstance(b, (list, tuple)):
                return isinstance(a, (list, tuple)) and len(a) == len(b) and all(
                    self._close(x, y) for x, y in zip(a, b))
            return a == b

        def __eq__(self, other):
            return self._close(other, self.expected)

        def __ne__(self, other):
            return not self.__eq__(other)

        def __repr__(self):
            return "approx(%r)" % (self.expected,)

    def approx(expected, rel=None, abs=None):
        return _Approx(expected, rel, abs)

    def fail(msg=""):
        raise _Failed(msg)

    def skip(msg=""):
        raise _Skipped(msg)

    class _Mark:
        def parametrize(self, argnames, argvalues, **_kw):
            if isinstance(argnames, str):
                names = [n.strip() for n in argnames.split(",") if n.strip()]
            else:
                names = list(argnames)

            def deco(fn):
                cases = list(getattr(fn, "_batos_params", []))
                cases.append((names, list(argvalues)))
                fn._batos_params = cases
                return fn
            return deco

        def __getattr__(self, _name):  # mark.slow etc.: no-op decorators
            def factory(*a, **k):
                if len(a) == 1 and callable(a[0]) and not k:
                    return a[0]
                return lambda fn: fn
            return factory

    pt.raises = raises
    pt.approx = approx
    pt.fail = fail
    pt.skip = skip
    pt.mark = _Mark()
    return pt


def _expand_cases(name, fn):
    """[(display_name, kwargs)] for a test function, expanding parametrize marks."""
    cases = [([], {})]
    # decorators apply bottom-up; pytest lists the top-most mark last in the id
    for names, values in reversed(getattr(fn, "_batos_params", [])):
        new = []
        for ids, kw in cases:
            for idx, v in enumerate(values):
                vals = (v,) if len(names) == 1 else tuple(v)
                if len(vals) != len(names):
                    raise TypeError("parametrize: %r expects %d values, got %r"
                                    % (names, len(names), v))
                k2 = dict(kw)
                k2.update(zip(names, vals))
                new.append((ids + [str(idx)], k2))
        cases = new
    return [(name if not ids else "%s[%s]" % (name, "-".join(ids)), kw) for ids, kw in cases]


def _method_runner(cls, mname, meth):
    def run(**kwargs):
        return getattr(cls(), mname)(**kwargs)
    if hasattr(meth, "_batos_params"):
        run._batos_params = meth._batos_params
    return run


# --------------------------------------------------------------------------
# modes
# --------------------------------------------------------------------------
def mode_check(req):
    try:
        check_source(req.get("source"), req.get("function"))
    except CheckError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True}


def mode_test(req):
    result = {"ok": False, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
    tests_src = req.get("tests")
    if not isinstance(tests_src, str):
        result["error"] = "bad request: 'tests' must be a string"
        return result

    sys.modules["pytest"] = _make_pytest_shim()
    try:
        mod, _fn = _load_tool(req.get("source"), req.get("function"))
    except CheckError as e:
        result["error"] = str(e)
        return result
    except BaseException as e:  # noqa: BLE001 - tool import failed
        result["error"] = "tool failed to load: " + _short_error(e)
        result["failed"] = 1
        result["failures"].append({"test": "<import tool>", "error": _format_tb(e)})
        return result

    # tests see the tool's globals (so they can call the function by name) and
    # may also `from tool import f`.
    ns = dict(mod.__dict__)
    ns["__name__"] = "tool_tests"
    try:
        tcode = compile(tests_src, TESTS_FILE, "exec", dont_inherit=True)
        _register_source(TESTS_FILE, tests_src)
        exec(tcode, ns)
    except SyntaxError as e:
        result["error"] = "tests: " + _syntax_message(e)
        return result
    except BaseException as e:  # noqa: BLE001
        result["error"] = "tests failed to load: " + _short_error(e)
        result["failed"] = 1
        result["failures"].append({"test": "<import tests>", "error": _format_tb(e)})
        return result

    tests = [(k, v) for k, v in ns.items()
             if k.startswith("test") and isinstance(v, types.FunctionType)
             and v.__code__.co_filename == TESTS_FILE]
    # classes named Test* with test_* methods (no fixtures, fresh instance per test)
    for cname, cls in list(ns.items()):
        if cname.startswith("Test") and isinstance(cls, type):
            for mname, meth in vars(cls).items():
                if mname.startswith("test") and isinstance(meth, types.FunctionType):
                    tests.append(("%s::%s" % (cname, mname), _method_runner(cls, mname, meth)))
    if not tests:
        result["error"] = "no test_* functions found in tests"
        return result

    for name, fn in tests:
        try:
            cases = _expand_cases(name, fn)
        except BaseException as e:  # noqa: BLE001
            cases = None
            result["failed"] += 1
            result["failures"].append({"test": name, "error": _format_tb(e)})
        for disp, kwargs in cases or []:
            try:
                fn(**kwargs)
            except _Skipped:
                result["skipped"] += 1
            except BaseException as e:  # noqa: BLE001 - SystemExit etc. count as failures
                result["failed"] += 1
                if len(result["failures"]) < MAX_FAILURES:
                    result["failures"].append({"test": disp, "error": _format_tb(e)})
            else:
                result["passed"] += 1
            sys.stderr.flush()

    if result["failed"] > len(result["failures"]):
        result["error"] = "%d failures not shown" % (result["failed"] - len(result["failures"]))
    result["ok"] = result["failed"] == 0 and result["passed"] > 0
    return result


def mode_call(req):
    args = req.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return {"error": "bad request: 'args' must be an object"}
    try:
        _mod, fn = _load_tool(req.get("source"), req.get("function"))
    except CheckError as e:
        return {"error": str(e)}
    except BaseException as e:  # noqa: BLE001
        sys.stderr.write(_format_tb(e))
        return {"error": "tool failed to load: " + _short_error(e)}

    try:
        value = fn(**args)
    except BaseException as e:  # noqa: BLE001 - includes SystemExit/KeyboardInterrupt
        sys.stderr.write(_format_tb(e))
        return {"error": _short_error(e)}

    if isinstance(value, dict) and list(value.keys()) == ["command"] \
            and isinstance(value["command"], dict):
        return value           # a Command: batos validates update/goto
    return {"value": value}    # serialisability/size are checked by _encode


MODES = {"check": mode_check, "test": mode_test, "call": mode_call}


def _error_reply(mode, message):
    if mode == "call":
        return {"error": message}
    if mode == "test":
        return {"ok": False, "passed": 0, "failed": 0, "skipped": 0, "failures": [],
                "error": message}
    return {"ok": False, "error": message}


def main():
    out_fd = _protect_stdout()
    mode = None
    limit = DEFAULT_MAX_OUTPUT
    try:
        raw = sys.stdin.buffer.read()
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            reply = _error_reply(None, "bad request: stdin is not one JSON object: %s" % e)
        else:
            del raw
            if not isinstance(req, dict):
                reply = _error_reply(None, "bad request: stdin must be a JSON object")
            else:
                mode = req.get("mode")
                lim = req.get("max_output_bytes")
                if isinstance(lim, int) and not isinstance(lim, bool) and lim >= 1024:
                    limit = lim
                handler = MODES.get(mode)
                if handler is None:
                    reply = _error_reply(None, "bad request: unknown mode %r" % (mode,))
                else:
                    reply = handler(req)
    except BaseException as e:  # noqa: BLE001 - last resort: still answer
        try:
            sys.stderr.write(_format_tb(e, skip_runner_frames=False))
        except BaseException:  # noqa: BLE001
            pass
        reply = _error_reply(mode, "runner: internal error: %s" % _short_error(e))
    try:
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    try:
        line = _encode(mode, reply, limit)
    except BaseException as e:  # noqa: BLE001 - e.g. MemoryError while encoding
        reply = None
        line = json.dumps(_error_reply(mode, "runner: cannot encode reply: %s" % _short_error(e)))
    _emit(out_fd, line)
    # os._exit: do not wait for threads the tool may have started, skip atexit
    # handlers registered by the tool.
    os._exit(0)


if __name__ == "__main__":
    main()
