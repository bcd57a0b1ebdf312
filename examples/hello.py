# An example for `pybox run`: what the sandbox sees, and that numpy works.
import sys

import numpy as np

print("Hello from pybox on Python", sys.version.split()[0])
m = np.arange(9).reshape(3, 3)
print("trace of", m.tolist(), "is", int(np.trace(m)))
