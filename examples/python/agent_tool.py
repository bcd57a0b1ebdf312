"""A `run_python` tool for an AI agent: register TOOL and run_python with the agent framework.

The model writes code; pybox runs it in a kernel sandbox; the tool returns, as text, what the
model needs to continue: stdout, stderr and how the run ended. A failing script is an answer
the model can act on, not an exception; only infrastructure errors (server unreachable, rate
limit, ...) are reported as such.
"""
import pybox

SANDBOX = pybox.Sandbox.from_env(timeout=10)

TOOL = {
    "name": "run_python",
    "description": ("Run Python 3 code in an isolated sandbox with no network and return its "
                    "output. numpy and PIL are available; print what you want to see."),
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "the Python source to run"}},
        "required": ["code"],
    },
}


def run_python(code: str) -> str:
    """Run `code` in the sandbox; return its output and outcome as text for the model."""
    try:
        r = SANDBOX.run(code)
    except pybox.RateLimited as e:
        return f"sandbox unavailable: rate limited, retry in {e.retry_after} s"
    except pybox.PyboxError as e:
        return f"sandbox unavailable: {e}"
    parts = []
    if r.stdout:
        parts.append(r.stdout.rstrip("\n"))
    if r.stderr:
        parts.append("[stderr]\n" + r.stderr.rstrip("\n"))
    if not r.success:
        how = r.error["message"] if r.error else f"exit code {r.exit_code}"
        parts.append(f"[{r.status}] {how}")
    return "\n".join(parts) or "(no output)"


if __name__ == "__main__":
    print(TOOL["name"], "->", run_python("import math\nprint(math.factorial(20))"))
    print(TOOL["name"], "->", run_python("print(1 / 0)"))
    print(TOOL["name"], "->", run_python("import socket"))
