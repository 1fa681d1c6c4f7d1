"""Checkpoint folders under faults: a person's files in the way, saves killed mid-way, several writers at once,
hostile manifests, leftovers, permissions and malformed files. Each error is checked for what a user reads."""

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
import torch

from grukit.train import CheckpointError, load_checkpoint, save_checkpoint
from grukit.train import checkpoint as ckpt
from grukit.train.checkpoint import checkpoint_exists, read_folder, write_folder

FORK = multiprocessing.get_context("fork")


def _save(path: Path, version: int) -> Path:
    return save_checkpoint(path, {"architecture": "GRU", "version": version}, {"w": torch.full((3,), float(version))})


def _version(path: Path) -> int:
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.weights["w"], torch.full((3,), float(loaded.config["version"])))
    return loaded.config["version"]


def _generation(path: Path) -> int:
    return json.loads((path / "manifest.json").read_text())["generation"]


# A person's files are never replaced -------------------------------------------------------------------------
def test_save_refuses_a_folder_of_a_persons_files_and_deletes_nothing(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("chapter one")
    (thesis / "figures.pdf").write_bytes(b"%PDF")
    with pytest.raises(
        CheckpointError,
        match=r"refusing to replace '.*thesis': it holds 'figures.pdf', 'thesis.tex' and is not a grukit checkpoint "
        r"\('.*thesis' has no manifest.json.*\); nothing was deleted",
    ):
        _save(thesis, 1)
    assert (thesis / "thesis.tex").read_text() == "chapter one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]
    assert sorted(p.name for p in thesis.iterdir()) == ["figures.pdf", "thesis.tex"]


def test_save_refuses_a_plain_file_at_the_path(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(CheckpointError, match=r"refusing to save a checkpoint to '.*notes.txt': a file is there"):
        _save(notes, 1)
    assert notes.read_text() == "my notes"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_save_refuses_a_folder_whose_manifest_is_not_ours(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"files": ["a.csv"]}')
    (folder / "a.csv").write_text("1,2")
    with pytest.raises(CheckpointError, match=r"refusing to replace '.*data'.*is not a grukit manifest"):
        _save(folder, 1)
    assert (folder / "a.csv").read_text() == "1,2"


def test_save_refuses_a_checkpoint_holding_files_its_manifest_does_not_list(tmp_path):
    path = _save(tmp_path / "ck", 1)
    (path / "my_notes.md").write_text("keep me")
    with pytest.raises(CheckpointError, match=r"it also holds 'my_notes.md', which its manifest.json does not list"):
        _save(path, 2)
    assert (path / "my_notes.md").read_text() == "keep me"
    assert _version(path) == 1


def test_an_empty_folder_and_an_existing_checkpoint_are_replaced(tmp_path):
    (tmp_path / "ck").mkdir()
    _save(tmp_path / "ck", 1)
    _save(tmp_path / "ck", 2)
    assert _version(tmp_path / "ck") == 2
    assert _generation(tmp_path / "ck") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck"], "a lock or staging folder was left behind"


# Saves killed between their two renames --------------------------------------------------------------------
def _killed_between_renames(path: str, version: int) -> None:
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if Path(dst).name == Path(path).name and Path(dst).parent.name.endswith(".old"):
            os.kill(os.getpid(), signal.SIGKILL)  # the old folder is aside, the new one not yet in place

    os.replace = replace_then_die
    _save(Path(path), version)


def _kill_a_save(path: Path, version: int, target=_killed_between_renames) -> None:
    child = FORK.Process(target=target, args=(str(path), version))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL


def test_two_saves_killed_between_renames_never_go_back_before_the_last_completed_save(tmp_path):
    path = tmp_path / "ck"
    _save(path, 1)
    _kill_a_save(path, 2)
    assert not path.exists()
    _kill_a_save(path, 3)
    with pytest.warns(UserWarning, match="restored checkpoint"):
        assert _version(path) == 1  # saves 2 and 3 never completed
    _save(path, 4)
    _kill_a_save(path, 5)
    _kill_a_save(path, 6)
    with pytest.warns(UserWarning, match="restored checkpoint"):
        assert _version(path) == 4
    _kill_a_save(path, 7)
    with pytest.warns(UserWarning, match="restored checkpoint"):
        _save(path, 8)
    _kill_a_save(path, 9)
    with pytest.warns(UserWarning, match="restored checkpoint"):
        assert _version(path) == 8
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_recovery_takes_the_newest_generation_whatever_the_staging_names(tmp_path):
    path = tmp_path / "ck"
    _save(path, 1)
    older = tmp_path / "older"
    shutil.copytree(path, older)
    _save(path, 2)
    # Leftovers of two killed saves, the stale one under the name that sorts last.
    (tmp_path / ".ck.00000000.old").mkdir()
    os.replace(path, tmp_path / ".ck.00000000.old" / "ck")
    (tmp_path / ".ck.ffffffff.old").mkdir()
    os.replace(older, tmp_path / ".ck.ffffffff.old" / "ck")
    with pytest.warns(UserWarning, match="restored checkpoint"):
        assert _version(path) == 2
    assert _generation(path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


# Several writers ---------------------------------------------------------------------------------------------
def _save_in_a_loop(path: str, writer: int) -> None:
    for round_ in range(6):
        _save(Path(path), 100 * writer + round_)


def _load_in_a_loop(path: str, results) -> None:
    versions = []
    for _ in range(20):
        versions.append(_version(Path(path)))
    results.put(versions)


def test_four_processes_saving_one_folder_take_turns_and_the_last_one_wins(tmp_path):
    path = tmp_path / "ck"
    _save(path, 0)
    results = FORK.Queue()
    writers = [FORK.Process(target=_save_in_a_loop, args=(str(path), writer)) for writer in range(1, 5)]
    reader = FORK.Process(target=_load_in_a_loop, args=(str(path), results))
    for process in [*writers, reader]:
        process.start()
    versions = results.get(timeout=120)
    for process in [*writers, reader]:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert len(versions) == 20  # every concurrent load verified its checksums and weights
    assert _version(path) in {105, 205, 305, 405}  # one writer's last save, whole
    assert _generation(path) == 1 + 4 * 6
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def _slow_save(path: str, version: int) -> None:
    real_fsync_dir = ckpt._fsync_dir

    def pause_once_staged(folder):
        if folder.name.endswith(".tmp"):
            Path(path + ".staged").touch()
            time.sleep(0.5)
        real_fsync_dir(folder)

    ckpt._fsync_dir = pause_once_staged
    _save(Path(path), version)


def test_a_load_during_a_save_waits_for_it_and_leaves_its_staging_alone(tmp_path):
    path = tmp_path / "ck"
    _save(path, 1)
    writer = FORK.Process(target=_slow_save, args=(str(path), 2))
    writer.start()
    while not (tmp_path / "ck.staged").exists() and writer.is_alive():
        time.sleep(0.01)
    assert _version(path) == 2
    writer.join()
    assert writer.exitcode == 0


# Hostile or malformed manifests ---------------------------------------------------------------------------------
def _with_manifest_entry(folder: Path, name: str, entry: dict) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "name", ["/etc/hostname", "../secret.txt", "sub/secret.txt", "..", ".hidden", "sub\\secret.txt", ""]
)
def test_manifest_names_outside_the_folder_are_refused_before_any_file_is_opened(tmp_path, monkeypatch, name):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not yours")
    path = _save(tmp_path / "ck", 1)
    # A matching hash, so only the name check stands between the manifest and the file.
    _with_manifest_entry(path, name, {"bytes": 9, "sha256": hashlib.sha256(b"not yours").hexdigest()})
    opened = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self.name) or real_read_bytes(self))
    with pytest.raises(CheckpointError, match=re.escape(f"lists {name!r}, refused because")):
        load_checkpoint(path)
    assert opened == ["manifest.json"]


@pytest.mark.parametrize(
    "entry",
    [{"bytes": 3}, {"sha256": "0" * 64}, {"bytes": -1, "sha256": "0" * 64}, {"bytes": 3, "sha256": "xyz"}, "3"],
)
def test_manifest_entries_lacking_a_size_or_a_hash_are_refused(tmp_path, entry):
    path = _save(tmp_path / "ck", 1)
    (path / "extra.bin").write_bytes(b"abc")
    _with_manifest_entry(path, "extra.bin", entry)
    with pytest.raises(CheckpointError, match=r"lists 'extra.bin' as .*: expected \{\"bytes\": <size>, \"sha256\""):
        load_checkpoint(path)


def test_a_symbolic_link_inside_a_checkpoint_is_not_followed(tmp_path):
    path = _save(tmp_path / "ck", 1)
    secret = tmp_path / "secret.txt"
    secret.write_bytes((path / "config.json").read_bytes())  # same bytes, so the hash would match
    (path / "config.json").unlink()
    (path / "config.json").symlink_to(secret)
    with pytest.raises(CheckpointError, match=r"holds 'config.json' as a symbolic link; refusing to follow it"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "manifest.json"])
def test_write_folder_refuses_file_names_that_are_not_plain(tmp_path, name):
    with pytest.raises(CheckpointError, match=rf"cannot write '{name}' into checkpoint"):
        write_folder(tmp_path / "ck", {name: b"x"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("{not json", r"manifest.json' is not valid JSON"),
        ('{"format": "grukit-checkpoint", "files": ["config.json"]}', r"is not a grukit manifest: expected"),
        ('{"format": "other", "files": {}}', r"is not a grukit manifest"),
        ('["grukit-checkpoint"]', r"is not a grukit manifest"),
        ('{"format": "grukit-checkpoint", "files": {}, "generation": "2"}', r"invalid generation '2'"),
    ],
)
def test_malformed_manifests_are_clear_errors(tmp_path, manifest, message):
    path = _save(tmp_path / "ck", 1)
    (path / "manifest.json").write_text(manifest)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


# Malformed files with a matching manifest (a buggy writer, or an edited folder re-manifested) -----------------
def _folder(tmp_path: Path, **files: bytes) -> Path:
    weights = ckpt.save_safetensors_bytes({"w": torch.ones(2)})
    contents = {"config.json": b'{"architecture": "GRU"}', "model.safetensors": weights}
    contents.update({name.replace("_json", ".json"): data for name, data in files.items()})
    return write_folder(tmp_path / "ck", contents)


@pytest.mark.parametrize(
    "files, message",
    [
        ({"config_json": b'{"architecture": "GRU",'}, r"holds invalid JSON in config.json"),
        ({"config_json": b'["GRU"]'}, r"config.json must hold a JSON object, got \[\"GRU\"\]"),
        ({"config_json": b"\xff\xfe"}, r"holds invalid JSON in config.json"),
        ({"training_state_json": b"{'epoch': 1}"}, r"holds invalid JSON in training_state.json"),
        ({"training_state_json": b"7"}, r"training_state.json must hold a JSON object, got 7"),
        (
            {"training_state_json": b'{"optimizer": {"param_groups": []}}'},
            r"the optimizer state in training_state.json does not match optimizer.safetensors \(KeyError",
        ),
    ],
)
def test_malformed_json_files_are_clear_errors(tmp_path, files, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_folder(tmp_path, **files))


def test_truncated_safetensors_with_a_matching_manifest_is_a_clear_error(tmp_path):
    weights = ckpt.save_safetensors_bytes({"w": torch.ones(64)})
    path = write_folder(tmp_path / "ck", {"config.json": b'{"architecture": "GRU"}', "model.safetensors": weights[:-9]})
    with pytest.raises(CheckpointError, match=r"unreadable safetensors file model.safetensors: .*deserializing"):
        load_checkpoint(path)


def test_a_file_swapped_for_one_of_another_size_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = _save(tmp_path / "ck", 1)
    (path / "model.safetensors").write_bytes(b"\0" * 100_000)
    opened = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self.name) or real_read_bytes(self))
    with pytest.raises(CheckpointError, match=r"corrupted or truncated: expected \d+ bytes .* got 100000 bytes"):
        load_checkpoint(path)
    assert "model.safetensors" not in opened


# Leftovers and permissions ---------------------------------------------------------------------------------------
def _killed_while_staging(path: str, version: int) -> None:
    real_fsync_dir = ckpt._fsync_dir

    def die_once_staged(folder):
        if folder.name.endswith(".tmp"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_fsync_dir(folder)

    ckpt._fsync_dir = die_once_staged
    _save(Path(path), version)


@pytest.mark.parametrize("next_access", ["save", "load", "exists"])
def test_leftovers_of_killed_saves_are_removed_and_nothing_else(tmp_path, next_access):
    path = _save(tmp_path / "ck", 1)
    _kill_a_save(path, 2, _killed_while_staging)
    _kill_a_save(path, 3, _killed_while_staging)
    others = [".ck.v2.1234abcd.tmp", ".ck.mine", ".ck.1234abcd.tmp.bak", "ck.1234abcd.tmp"]
    for name in others:
        (tmp_path / name).mkdir()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ck.") and p.name not in others)
    # The second save removed the first one's staging folder: the lock file and one staging folder are left.
    assert leftovers[0].endswith(".tmp") and leftovers[1:] == [".ck.lock"], leftovers
    if next_access == "save":
        _save(path, 4)
    elif next_access == "load":
        assert _version(path) == 1
    else:
        assert checkpoint_exists(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck", *others])


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_checkpoint_folders_and_files_follow_the_umask(tmp_path, umask, folder_mode, file_mode):
    previous = os.umask(umask)
    try:
        path = _save(tmp_path / "ck", 1)
        _save(path, 2)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == folder_mode
    assert {stat.S_IMODE(file.stat().st_mode) for file in path.iterdir()} == {file_mode}


def test_a_checkpoint_in_a_read_only_folder_still_loads(tmp_path, monkeypatch):
    path = _save(tmp_path / "ck", 1)
    real_open = os.open

    def read_only_open(file, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", str(file))
        return real_open(file, flags, *args)

    monkeypatch.setattr(ckpt.os, "open", read_only_open)
    assert read_folder(path, names=("config.json",)).keys() == {"config.json"}
    assert checkpoint_exists(path)
    assert _version(path) == 1
    with pytest.raises(OSError, match="Read-only file system"):
        _save(path, 2)


def test_a_path_with_a_trailing_slash_or_dot_names_the_same_checkpoint(tmp_path, monkeypatch):
    _save(Path(f"{tmp_path / 'ck'}/"), 1)
    _save(Path(f"{tmp_path / 'ck'}/"), 2)
    monkeypatch.chdir(tmp_path / "ck")
    assert _version(Path(".")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_saving_through_a_symbolic_link_updates_the_folder_it_points_to(tmp_path):
    target = tmp_path / "checkpoint"
    write_folder(target, {"a.txt": b"first"})
    link = tmp_path / "link"
    os.symlink(target, link)
    write_folder(link, {"a.txt": b"second"})
    assert link.is_symlink(), "the link itself must stay a link"
    assert read_folder(target) == {"a.txt": b"second"}
    assert read_folder(link) == {"a.txt": b"second"}
