#!/usr/bin/env bash
# Every package a test uses is installed by scripts/install-deps.sh. CI runs on a machine where whatever was
# once installed by hand is still there, so a missing install step stays hidden until a fresh machine fails;
# this test finds it on any machine. It lists what the tests use —
#   Python modules imported by the scripts under tests/ and bench/ that tests run (and inline `python3 -c`),
#   absolute /usr/... paths and the commands they probe with `command -v` —
# finds the Debian package that provides each here (dpkg -S) and fails when install-deps.sh does not name it.
# A module that no installed package provides is a failure too: install-deps.sh should have installed it.
set -u
src=$2
exec /usr/bin/python3 - "$src" <<'PY'
import ast, glob, importlib.util, os, re, subprocess, sys

src = sys.argv[1]
deps_script = open(os.path.join(src, "scripts/install-deps.sh")).read()
declared = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", deps_script))
test_files = sorted(glob.glob(os.path.join(src, "tests/*.sh")) + glob.glob(os.path.join(src, "tests/*.c")) +
                    [os.path.join(src, "tests/CMakeLists.txt"), os.path.join(src, "CMakeLists.txt")])
texts = {f: open(f, errors="replace").read() for f in test_files}
# Scripts the tests run, and the bench scripts those call.
scripts = set()
for text in list(texts.values()):
    for rel in re.findall(r"((?:tests/ref|bench)/[\w./-]+\.(?:py|sh|js))", text):
        scripts.add(os.path.join(src, rel))
for s in list(scripts):
    if s.endswith(".sh") and os.path.exists(s):
        for rel in re.findall(r"((?:tests/ref|bench)/[\w./-]+\.(?:py|js))", open(s).read()):
            scripts.add(os.path.join(src, rel))

def imports_of(code):
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names

modules = {}
for s in sorted(scripts):
    if s.endswith(".py") and os.path.exists(s):
        for m in imports_of(open(s).read()):
            modules.setdefault(m, s)
for f, text in texts.items():
    for code in re.findall(r'python3 -c "(.*?)"', text, re.S):
        try:
            found = imports_of(code)
        except SyntaxError:
            found = set(re.findall(r"^\s*import (\w+)", code, re.M))
        for m in found:
            modules.setdefault(m, f)

local = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(src, "tests/ref/*.py"))}
paths = {}  # a file that proves the thing is there -> who uses it
for m, user in modules.items():
    if m in local or m in sys.stdlib_module_names:
        continue
    spec = importlib.util.find_spec(m)
    origin = spec and (spec.origin if spec.origin not in (None, "namespace") else None)
    if not origin:
        print(f"FAILED: {os.path.relpath(user, src)} imports '{m}', which no installed package provides")
        paths[f"<missing {m}>"] = user
        continue
    paths[origin] = user
for f, text in texts.items():
    for p in re.findall(r"(/usr/(?:share|include|lib)/[\w.+-]+(?:/[\w.+-]+)?)", text):
        paths.setdefault(p, f)
    for cmd in re.findall(r"command -v (\w[\w.+-]*)", text):
        where = subprocess.run(["bash", "-c", f"command -v {cmd}"], capture_output=True, text=True).stdout.strip()
        if where.startswith("/"):
            paths.setdefault(os.path.realpath(where), f)

passed = failed = 0
for path, user in sorted(paths.items()):
    if path.startswith("<missing"):
        failed += 1
        continue
    if not os.path.exists(path):
        continue  # a path a test only probes for, absent here: nothing to attribute
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout
    if not out:
        print(f"FAILED: {path} (used by {os.path.relpath(user, src)}) belongs to no Debian package")
        failed += 1
        continue
    pkgs = {line.split(":")[0].strip() for line in out.splitlines() if ":" in line}
    pkgs = {p.split(",")[0].strip() for p in pkgs}
    if any(p.startswith(("libpython3", "python3.11", "libc6", "bash", "coreutils")) for p in pkgs):
        passed += 1
        continue
    if pkgs & declared:
        passed += 1
    else:
        print(f"FAILED: {path} (used by {os.path.relpath(user, src)}) comes from {', '.join(sorted(pkgs))}, "
              "which scripts/install-deps.sh does not install")
        failed += 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
