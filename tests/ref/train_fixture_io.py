"""Writes a fixture set for kiln's C tests: <set>.bin holds float32 little-endian arrays back to back,
<set>.txt names them in the same order, one "name count" line each (tests/train_ref_fixture.h reads it).
Integers (class labels) are stored as float32 too; they are small and exact."""

import os

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def f32(x):
    """The float32 value of x as a Python float, so that PyTorch/NumPy use exactly the C test's numbers."""
    return float(np.float32(x))


class FixtureWriter:
    def __init__(self, set_name, description):
        self.set_name = set_name
        self.description = description
        self.names = []
        self.arrays = []

    def add(self, name, array):
        assert name not in self.names and " " not in name, name
        flat = np.asarray(array, dtype=np.float64).reshape(-1)
        assert np.all(np.isfinite(flat)), name
        self.names.append(name)
        self.arrays.append(flat.astype("<f4"))

    def write(self):
        os.makedirs(DATA_DIR, exist_ok=True)
        with open(os.path.join(DATA_DIR, self.set_name + ".bin"), "wb") as f:
            for a in self.arrays:
                f.write(a.tobytes())
        with open(os.path.join(DATA_DIR, self.set_name + ".txt"), "w") as f:
            f.write(f"# {self.description}\n")
            f.write(f"# float32 little-endian arrays, back to back in {self.set_name}.bin in this order: name count\n")
            for name, a in zip(self.names, self.arrays):
                f.write(f"{name} {a.size}\n")
        total = sum(a.size for a in self.arrays)
        print(f"{self.set_name}: {len(self.names)} arrays, {total} floats ({4 * total} bytes)")
