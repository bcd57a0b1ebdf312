"""Files in and out: send a CSV, let the sandbox summarise it, get a report file back."""
from pybox import Sandbox

CODE = """
with open("sales.csv") as f:
    header, *lines = f.read().split()
keys = header.split(",")
rows = [dict(zip(keys, line.split(","))) for line in lines]
total = sum(int(r["amount"]) for r in rows)
with open("report.txt", "w") as out:
    out.write(f"{len(rows)} sales, total {total}\\n")
    for r in sorted(rows, key=lambda r: -int(r["amount"])):
        out.write(f"{r['item']}: {r['amount']}\\n")
print("report written")
"""

sales = b"item,amount\napples,12\npears,30\nplums,7\n"
result = Sandbox.from_env().run(CODE, files={"sales.csv": sales},
                                return_files=["report.txt", "not-written.txt"])
print(result.stdout + result.stderr, end="")
print(result.get_file("report.txt").decode(), end="")
for name, reason in result.file_errors.items():
    print(f"{name}: {reason}")
raise SystemExit(0 if result.success else 1)
