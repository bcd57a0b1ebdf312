"""sandbox_executor: the client-library interface of other Python executors, on top of pybox.

Code written for that interface runs unchanged against pybox: locally, in pybox's kernel
sandbox through `pybox.Sandbox` (nothing runs unsandboxed), or remotely, on a pybox server or
any server answering the same shape at `POST /execute`.

    from sandbox_executor import SandboxClient

    client = SandboxClient()                              # local: the `pybox` binary
    client = SandboxClient(server_url="http://127.0.0.1:8080", api_key="...")   # remote
    client = SandboxClient.from_env()                     # SANDBOX_* variables or ./.env

    result = client.execute("print(6 * 7)")
    result.success, result.return_code, result.stdout     # True, 0, "42\\n"

    result = client.execute(code, input_files={"data.csv": b"id,value\\n1,100\\n"})
    result.get_file_content("result.txt")                 # a file the script wrote, or None

A script that fails is an ExecutionResult (success False; return_code 1 for an exception or
code the sandbox refused, -1 for a timeout), never an exception; SandboxException means the
request itself failed (a non-2xx answer, no server, no `pybox` binary, network asked).
Standard library and pybox only.
"""
from ._client import SandboxClient
from ._config import ClientConfig, ExecutionMode
from ._result import ExecutionResult, SandboxException

__version__ = "0.1.0"

__all__ = ["SandboxClient", "ClientConfig", "ExecutionMode", "ExecutionResult",
           "SandboxException", "__version__"]
