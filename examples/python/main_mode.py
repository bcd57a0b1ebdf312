"""main() mode: the sandbox calls main() and hands back its return value, decoded from JSON."""
import json

from pybox import Sandbox

CODE = """
import statistics

def main():
    data = [2, 4, 4, 4, 5, 5, 7, 9]
    print("computing statistics of", len(data), "numbers")
    return {"mean": statistics.mean(data), "stdev": statistics.pstdev(data),
            "sorted": sorted(data, reverse=True)}
"""

result = Sandbox.from_env().run(CODE, main=True)
print(result.stdout, end="")
print("main() returned", json.dumps(result.result, sort_keys=True))
raise SystemExit(0 if result.success else 1)
