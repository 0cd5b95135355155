"""The ``seghz`` package never imports streamlit (the app's pages and ``ui/`` do): every one of its modules is
imported in a fresh interpreter, and streamlit must not be among the loaded modules afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# seghz.__main__ runs the CLI when imported (``entry()`` at module level), so it is left out; it imports only
# seghz.cli, which is imported here like every other module.
_CHILD = r"""
import importlib, json, pkgutil, sys, traceback
import seghz

SKIP = {"seghz.__main__"}
imported, failed, culprit = [], {}, None


def onerror(name):
    failed[name] = traceback.format_exc(limit=3)


for info in pkgutil.walk_packages(seghz.__path__, "seghz.", onerror=onerror):
    if info.name in SKIP:
        continue
    try:
        importlib.import_module(info.name)
    except Exception:
        failed[info.name] = traceback.format_exc(limit=3)
        continue
    imported.append(info.name)
    if culprit is None and "streamlit" in sys.modules:
        culprit = info.name
print(json.dumps({"imported": imported, "failed": failed, "culprit": culprit,
                  "streamlit": sorted(m for m in sys.modules if m == "streamlit" or m.startswith("streamlit."))[:5]}))
"""


def test_no_module_of_the_seghz_package_imports_streamlit():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                       check=False)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["failed"] == {}, "modules of seghz that do not import:\n" + "\n".join(f"{k}:\n{v}" for k, v in r["failed"].items())
    # the walk really covered the package: every .py file under seghz/ (but __main__) is a module imported
    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for f in (ROOT / "seghz").rglob("*.py") if "__pycache__" not in f.parts}
    files.discard("seghz.__main__")
    files.discard("seghz")  # the package itself is imported by the walk before any submodule
    assert files <= set(r["imported"]), sorted(files - set(r["imported"]))
    assert r["culprit"] is None and r["streamlit"] == [], (
        f"importing {r['culprit']} loaded streamlit ({r['streamlit']}); the seghz package must not import it")
