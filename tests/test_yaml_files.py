"""read_yaml_mapping: the one reader of a user's YAML mapping, with one message per way it fails."""

import pytest

from hydranet.yaml_files import read_yaml_mapping


class FileError(ValueError):
    pass


def test_reads_a_mapping_and_names_the_file_otherwise(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: [2, 3]\n")
    assert read_yaml_mapping(good) == {"a": 1, "b": [2, 3]}
    cases = {"list.yaml": ("- 1\n- 2\n", r"list\.yaml: expected a suite, got list"),
             "broken.yaml": ("a: [1, 2\n", r"broken\.yaml: not valid YAML"),
             "empty.yaml": ("", r"empty\.yaml: expected a suite, got NoneType")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(FileError, match=message):
            read_yaml_mapping(tmp_path / name, FileError, "a suite")
    with pytest.raises(FileError, match=r"missing\.yaml: cannot read \(No such file or directory\)"):
        read_yaml_mapping(tmp_path / "missing.yaml", FileError)
    assert read_yaml_mapping(tmp_path / "empty.yaml", empty={}) == {}
