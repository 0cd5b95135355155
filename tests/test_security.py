"""Security defaults: no unpickling anywhere in the code, a local-only Streamlit server with capped uploads,
workspace path confinement, and API keys masked in URLs that reach errors and logs (docs/bad_input.md,
"Security defaults")."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from seghz.errors import BadInputError
from seghz.security import mask_value, redact_secrets
from seghz.store import Workspace, slugify, validate_slug

REPO = Path(__file__).resolve().parents[1]

# files allowed to call an unpickler, and why
PICKLE_ALLOWED = {
    # builds a crafted pickle and unpickles it once to prove the payload works before checking SegHZ refuses it
    "tests/test_checkpoint.py": "sanity check of the crafted payload",
}


def _python_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(f for f in set(out) if (REPO / f).is_file())


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


_UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def unsafe_loads(source: str) -> list[tuple[int, str]]:
    """(line, what) for every call that can unpickle data: ``pickle.load(s)`` / ``Unpickler`` (also dill, joblib,
    ``from pickle import load``), ``torch.load`` without ``weights_only=True``, ``np.load`` with
    ``allow_pickle=True`` and ``pandas.read_pickle``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> module.function, from "from pickle import loads as l"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _UNPICKLERS:
            for a in node.names:
                if a.name in ("load", "loads", "Unpickler", "open"):
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                    found.append((node.lineno, f"from {node.module} import {a.name}"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, last = name.rpartition(".")
        if head.split(".")[0] in _UNPICKLERS and last in ("load", "loads", "Unpickler", "open"):
            found.append((node.lineno, f"{name}("))
        elif name in aliases:
            found.append((node.lineno, f"{aliases[name]}("))
        elif name == "torch.load" and not _kw_true(node, "weights_only"):
            found.append((node.lineno, "torch.load( without weights_only=True"))
        elif name in ("np.load", "numpy.load") and _kw_true(node, "allow_pickle"):
            found.append((node.lineno, f"{name}( with allow_pickle=True"))
        elif last == "read_pickle":
            found.append((node.lineno, f"{name}("))
    return sorted(found)


def test_the_scanner_catches_each_form():
    bad = (
        "import pickle\nimport numpy as np\nimport torch\nfrom pickle import loads as L\nimport joblib\n"
        "pickle.load(f)\npickle.loads(b)\nL(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "np.load(p, allow_pickle=True)\njoblib.load(p)\npickle.Unpickler(f).load()\n"
    )
    whats = [w for _, w in unsafe_loads(bad)]
    assert len(whats) == 9, whats
    ok = "import pickle\nimport numpy as np\nimport torch\npickle.dumps(x)\ntorch.load(p, weights_only=True)\nnp.load(p)\n" \
         "np.load(p, allow_pickle=False)\n"
    assert unsafe_loads(ok) == []


def test_no_code_path_unpickles():
    files = _python_files()
    assert "seghz/models/checkpoint.py" in files and "tests/test_security.py" in files
    offenders = []
    for f in files:
        if f in PICKLE_ALLOWED:
            continue
        for line, what in unsafe_loads((REPO / f).read_text(encoding="utf-8")):
            offenders.append(f"{f}:{line}: {what}")
    assert offenders == [], "code that can unpickle untrusted files:\n" + "\n".join(offenders)


def test_allowed_pickle_users_only_unpickle_their_own_payload():
    for f in PICKLE_ALLOWED:
        found = unsafe_loads((REPO / f).read_text(encoding="utf-8"))
        assert [w for _, w in found] == ["pickle.loads("], (f, found)


# ------------------------------------------------------------------------------------------- Streamlit


def test_streamlit_binds_localhost_with_capped_uploads():
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    server = cfg["server"]
    assert server["address"] == "127.0.0.1"
    assert 1 <= int(server["maxUploadSize"]) <= 200  # MB
    assert server.get("enableXsrfProtection", True) is True
    assert server.get("enableCORS", True) is True
    assert cfg.get("browser", {}).get("gatherUsageStats") is False
    assert cfg.get("client", {}).get("toolbarMode") == "viewer"  # no Deploy button or developer menu for analysts


def _ui_files() -> list[Path]:
    return [REPO / f for f in _python_files() if f == "app.py" or f.startswith(("pages/", "ui/"))]


def test_every_file_uploader_restricts_types():
    calls = []
    for f in _ui_files():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _dotted(node.func).endswith("file_uploader"):
                calls.append((f.relative_to(REPO), node))
    for f, node in calls:
        kw = {k.arg: k.value for k in node.keywords}
        assert "type" in kw, f"{f}:{node.lineno}: st.file_uploader without type=[...]"
        assert isinstance(kw["type"], (ast.List, ast.Tuple, ast.Name, ast.Attribute)), f"{f}:{node.lineno}"
        if isinstance(kw["type"], (ast.List, ast.Tuple)):
            exts = [e.value.lower().lstrip(".") for e in kw["type"].elts if isinstance(e, ast.Constant)]
            assert exts and not {"pkl", "pickle", "pt", "pth", "ckpt", "npy"} & set(exts), (f, exts)


# ------------------------------------------------------------------------------------------- confinement


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def test_workspace_paths_stay_inside(ws, tmp_path):
    (ws.root / "scenes" / "a").mkdir()
    assert ws.relative(ws.root / "scenes" / "a", "x") == "scenes/a"
    assert ws.relative("scenes/a/../a", "x") == "scenes/a"
    for bad in ("../outside.png", "scenes/../../outside.png", str(tmp_path / "outside.png"), "/etc/passwd"):
        with pytest.raises(BadInputError, match="must lie inside the workspace"):
            ws.relative(bad, "scene image")
    # a symlink inside the workspace that points outside is refused too (resolved before the check)
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    link = ws.root / "scenes" / "link.png"
    link.symlink_to(secret)
    with pytest.raises(BadInputError, match="inside the workspace"):
        ws.relative(link, "scene image")
    (ws.root / "scenes" / "dirlink").symlink_to(tmp_path)
    with pytest.raises(BadInputError, match="inside the workspace"):
        ws.relative("scenes/dirlink/secret.txt", "scene image")
    # inside=False keeps outside paths, absolute (the checkpoint registry's shipped models)
    assert ws.relative(secret, "checkpoint", inside=False) == str(secret.resolve())


@pytest.mark.parametrize("text", ["../../etc/passwd", "/etc/passwd", "..", "a/b\\c", "C:\\x", "名字", " ", "\x00x",
                                  "scene\n../x", "-rf", "." * 70])
def test_user_text_becomes_a_safe_slug(text):
    s = slugify(text, "scene")
    assert validate_slug(s, "id") == s
    assert "/" not in s and "\\" not in s and ".." not in s and s[0] not in "-_"


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "A", "x" * 65, "-x", ".hidden", "a b"])
def test_ids_from_user_text_are_validated(ws, bad):
    with pytest.raises(ValueError, match="not a safe slug"):
        ws.add_scene("n", "scenes/none.png", "hz7", scene_id=bad)
    with pytest.raises(ValueError, match="not a safe slug"):
        ws.register_checkpoint(__file__, {}, checkpoint_id=bad)


def test_scene_ids_are_slugs_of_names(ws):
    assert ws.unique_scene_id("../../etc/x") == "etc-x"
    assert validate_slug(ws.unique_scene_id("西湖"), "scene id").startswith("scene-")


# ------------------------------------------------------------------------------------------- secrets

KEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("url,masked", [
    (f"https://t0.tianditu.gov.cn/img_w/wmts?tk={KEY}&x=1", "https://t0.tianditu.gov.cn/img_w/wmts?tk=***&x=1"),
    (f"https://restapi.amap.com/v3/tile?key={KEY}", "https://restapi.amap.com/v3/tile?key=***"),
    (f"https://api.map.baidu.com/x?ak={KEY}&y=2", "https://api.map.baidu.com/x?ak=***&y=2"),
    (f"https://a.b/{{z}}/{{x}}/{{y}}.png?TK={KEY}", "https://a.b/{z}/{x}/{y}.png?TK=***"),
    (f"error at 'http://h/p?x=1&tk={KEY}': refused", "error at 'http://h/p?x=1&tk=***': refused"),
])
def test_redact_secrets_masks_keys(url, masked):
    assert redact_secrets(url) == masked
    assert KEY not in redact_secrets(url)


def test_redact_secrets_leaves_placeholders_and_other_params():
    for text in ("https://t{s}.tianditu.gov.cn/wmts?tk={tk}&x={x}", "https://a/{z}/{x}/{y}?key={key}",
                 "https://a/tiles?monkey=1&size=256", "plain text without a url"):
        assert redact_secrets(text) == text
    assert mask_value(KEY) == "****" + KEY[-4:] and mask_value("") == "" and mask_value("short") == "****"


def test_fetch_errors_never_show_the_key(tmp_path, capsys):
    import socket

    from seghz.cli import main
    from seghz.geo import fetch as F

    with pytest.raises(BadInputError) as ei:
        F.check_template(f"ftp://tiles/{{z}}/{{x}}/{{y}}.png?tk={KEY}")
    assert KEY not in str(ei.value) and "tk=***" in str(ei.value)
    with pytest.raises(BadInputError) as ei:
        F.check_template(f"https://tiles/?key={KEY}")
    assert KEY not in str(ei.value)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused at once
    url = f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png?tk={KEY}"
    with pytest.raises(F.FetchError) as ei:
        F.fetch_xyz(url, (120.0, 30.0, 120.001, 30.001), 10, tmp_path / "o.tif", cache_dir=tmp_path / "c",
                    retries=0, backoff=0.0, sleep=lambda s: None, timeout=2)
    assert KEY not in str(ei.value) and "tk=***" in str(ei.value)
    rc = main(["fetch", "--url", url, "--bbox", "120,30,120.001,30.001", "--zoom", "10",
               "--output", str(tmp_path / "o2.tif"), "--retries", "0"])
    out = capsys.readouterr()
    assert rc != 0 and KEY not in out.out + out.err and "tk=***" in out.err, out


def test_job_logs_and_failure_messages_never_show_the_key(ws):
    from seghz.jobs.runner import ProgressReporter, tail_log
    from seghz.jobs.worker import _fail

    jid = ws.create_job("fetch", {"url": "https://t0.tianditu.gov.cn/wmts?tk={tk}"})
    ProgressReporter(ws, jid).log(f"GET https://t0.tianditu.gov.cn/wmts?tk={KEY}&x=1 -> 403")
    try:
        raise RuntimeError(f"HTTP 403 for https://restapi.amap.com/tile?key={KEY}")
    except RuntimeError as e:
        _fail(ws, jid, e, "fetch failed")
    log = "\n".join(tail_log(ws, jid, 50))
    assert "tk=***" in log and KEY not in log
    job = ws.get_job(jid)
    assert job.status == "failed" and "key=***" in job.message and KEY not in job.message
    assert KEY not in (ws.root / "index.sqlite").read_bytes().decode("latin-1")


def test_no_key_like_literals_in_tracked_files():
    """No real-looking API key sits in a tracked URL (tk=/key=/ak= followed by 16+ hex/alnum characters)."""
    pat = re.compile(r"[?&](?:tk|key|ak)=([A-Za-z0-9]{16,})")
    hits = []
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in out:
        p = REPO / f
        if p.suffix not in (".py", ".md", ".toml", ".json", ".txt", ".yml", ".yaml", ".cfg") or not p.is_file():
            continue
        for m in pat.finditer(p.read_text(encoding="utf-8", errors="replace")):
            hits.append(f"{f}: {m.group(0)[:12]}...")
    assert hits == [], hits



# ------------------------------------------------------------------------------------------------ path fields


def test_import_roots_limit_the_apps_path_fields_without_telling_what_exists(tmp_path, monkeypatch):
    from seghz.errors import BadInputError
    from seghz.security import IMPORT_ROOTS_ENV, check_server_path

    inside, outside = tmp_path / "data", tmp_path / "secret"
    inside.mkdir()
    outside.mkdir()
    (outside / "passwd").write_text("x")
    (inside / "a.png").write_text("x")
    monkeypatch.delenv(IMPORT_ROOTS_ENV, raising=False)
    assert check_server_path(outside / "passwd") == outside / "passwd"  # unset: no limit (a local app)
    monkeypatch.setenv(IMPORT_ROOTS_ENV, f"{inside}{os.pathsep}{tmp_path / 'other'}")
    assert check_server_path(inside / "a.png") == (inside / "a.png").resolve()
    errors = []
    for p in (outside / "passwd", outside / "missing", inside / ".." / "secret" / "passwd"):  # ".." counts too
        with pytest.raises(BadInputError, match="lies outside the folders this server may read") as e:
            check_server_path(p, "import path")
        errors.append(str(e.value).split(": ", 1)[1])
    assert len(set(errors)) == 1  # the same words whether the file exists or not
    (inside / "link").symlink_to(outside / "passwd")  # a link inside that leads out
    with pytest.raises(BadInputError):
        check_server_path(inside / "link")
