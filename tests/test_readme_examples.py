"""The README's command lines, exactly as printed.

Every ``sammed ...`` line of the README's shell blocks is parsed by the real parser (after the
same argv handling ``main`` applies), so an example that argparse would misread, such as a
negative world coordinate after ``--point``, fails here. The 3D ``sammed segment`` examples are
then run for real in a folder that holds the files they name: ``ct.nii.gz`` (a synthetic CT
that contains every printed voxel and world point) and ``dicom_dir/`` (the shared DICOM series),
with SAM-Med3D-turbo-sized fixture weights put into a fresh ``$SAMMED_HOME`` by ``sammed models
download --url`` from a loopback server, so that the examples find the model by name as a user's
do. Lines with placeholders (``i,j,k``) or files a reader must supply (2D pictures, ONNX folders,
training runs) are parsed only.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from sammed.cli import attach_negative_values, build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """``sammed`` command lines of the README's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("sammed "):
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_readme_has_examples() -> None:
    assert any(c.startswith("sammed segment") for c in COMMANDS) and len(COMMANDS) >= 10


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(attach_negative_values(argv))
    except SystemExit as exc:  # argparse refused the line
        pytest.fail(f"README example does not parse ({exc.code}): {command}")
    assert getattr(args, "handler", None) is not None


def _runnable(command: str) -> bool:
    words = shlex.split(command)
    return (
        command.startswith("sammed segment ")
        and not any(w in words for w in ("--backend", "--model", "--checkpoint", "-m", "-c"))
        and not re.search(r"[ijk],[ijk]", command)
    )


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory, data_dir) -> Path:
    """ct.nii.gz and dicom_dir/ as the README names them; turbo-sized weights in $SAMMED_HOME."""
    import functools
    import http.server
    import threading

    import SimpleITK as sitk

    from support import save_fixture_checkpoint

    folder = tmp_path_factory.mktemp("readme")
    served = tmp_path_factory.mktemp("served")
    save_fixture_checkpoint("turbo", served / "sam_med3d_turbo.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/sam_med3d_turbo.pth"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMMED_HOME", str(tmp_path_factory.mktemp("home")))
        patch.delenv("SAMMED_OFFLINE", raising=False)
        try:
            assert main(["models", "download", "sam-med3d-turbo", "--url", url]) == 0
        finally:
            server.shutdown()
        patch.setenv("SAMMED_OFFLINE", "1")  # the examples must find the cached file, not the network
        rng = np.random.default_rng(3)
        volume = rng.normal(0, 30, size=(120, 320, 320)).astype(np.int16)  # [k, j, i]
        volume[30:90, 120:260, 60:200] += 300  # a bright block around the printed prompts
        ct = sitk.GetImageFromArray(volume)
        ct.SetOrigin((-100.0, -150.0, 0.0))  # LPS; RAS (-60.5, 12, 80) lies inside
        sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
        os.symlink(data_dir / "totalsegmentator_examples" / "example_ct_dicom", folder / "dicom_dir")
        yield folder


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if _runnable(c)] or ["(none)"])
def test_readme_segment_example_runs(command: str, example_folder: Path, capsys, monkeypatch) -> None:
    if command == "(none)":
        pytest.fail("the README has no runnable 3D segment example")
    monkeypatch.chdir(example_folder)
    code = main(shlex.split(command)[1:])
    err = capsys.readouterr().err
    assert code == 0, err
    out = shlex.split(command)[shlex.split(command).index("--out") + 1]
    assert (example_folder / out).is_file()
    (example_folder / out).unlink()
