"""read_yaml_mapping: the one reader of a user's YAML mapping, with one message per way it fails;
yaml_error_message: the one formatter of a YAML syntax error (FILE:LINE:COLUMN: problem)."""

import pytest
import yaml

from hydranet.yaml_files import read_yaml_mapping, yaml_error_message


class FileError(ValueError):
    pass


def test_reads_a_mapping_and_names_the_file_otherwise(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: [2, 3]\n")
    assert read_yaml_mapping(good) == {"a": 1, "b": [2, 3]}
    cases = {"list.yaml": ("- 1\n- 2\n", r"list\.yaml: expected a suite, got list"),
             "broken.yaml": ("a: [1, 2\n", r"broken\.yaml:2:1: expected ',' or '\]', but got '<stream end>' \(not "
                                           r"valid YAML, while parsing a flow sequence from 1:4\)$"),
             "empty.yaml": ("# nothing yet\n", r"empty\.yaml: empty file \(expected a suite\)$"),
             "null.yaml": ("--- ~  # a value, null\n", r"null\.yaml: holds only null \(expected a suite\)$")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(FileError, match=message):
            read_yaml_mapping(tmp_path / name, FileError, "a suite")
    with pytest.raises(FileError, match=r"missing\.yaml: cannot read \(No such file or directory\)"):
        read_yaml_mapping(tmp_path / "missing.yaml", FileError)
    assert read_yaml_mapping(tmp_path / "empty.yaml", empty={}) == {}


@pytest.mark.parametrize("text, message", [
    # the trial's file: before, 'not valid YAML (while parsing ...; in "<unicode string>", line 4, column 1:; ^)'
    ("train:\n  steps: 2\n  lr: 0.1\n- bogus\n",
     "p/broken.yaml:4:1: expected <block end>, but found '-' (not valid YAML, while parsing a block mapping from 1:1)"),
    ("a: b: c\n", "p/broken.yaml:1:5: mapping values are not allowed here (not valid YAML)"),
    ('a: 1\nb: "open\n', "p/broken.yaml:3:1: found unexpected end of stream (not valid YAML, while scanning a quoted "
                         "scalar from 2:4)"),
    ("a: &x 1\nb: *y\n", "p/broken.yaml:2:4: found undefined alias 'y' (not valid YAML)"),
    ("a: 1\nb: \x07\n", "p/broken.yaml:2:4: unacceptable character #x0007: special characters are not allowed "
                       "(not valid YAML)"),
])
def test_a_yaml_error_is_one_line_with_file_line_and_column(tmp_path, text, message):
    with pytest.raises(yaml.YAMLError) as e:
        yaml.safe_load(text)
    assert yaml_error_message(e.value, "p/broken.yaml", text) == message
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(FileError) as e:
        read_yaml_mapping(path, FileError)
    assert str(e.value) == message.replace("p/broken.yaml", str(path))


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(FileError, match=r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at byte 9\)"):
        read_yaml_mapping(path, FileError)


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    # PyYAML keeps the last value silently: `steps: 1000` ... `steps: 0` trained with 0 and named no line.
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  steps: 1000\n  lr: 0.1\n  steps: 0\n")
    with pytest.raises(ValueError, match=r"dup.yaml:4:3: key 'steps' given twice \(first at line 2\)"):
        read_yaml_mapping(path)
    path.write_text("base: &b {a: 1}\nother:\n  <<: *b\n  a: 2\n")  # a merge key still overrides
    assert read_yaml_mapping(path) == {"base": {"a": 1}, "other": {"a": 2}}
