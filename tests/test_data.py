"""data/formats.py: the three problem formats, offline trajectories, and errors that name file:line and field.

Run: python -m pytest -q tests/test_data.py
"""
import json

import pytest

from data.formats import DataError, last_boxed, load_offline, load_problems


def write_jsonl(path, rows):
    """Write rows (dicts, or raw strings written as-is) one per line; returns the path as a string."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


# -----------------------------------------------------------------------------
# the three problem formats

def test_own_format(tmp_path):
    """{"id", "prompt", "answer"} parses as-is; a numeric answer becomes a string."""
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "q1", "prompt": "12+34", "answer": "46"},
                                           {"id": 7, "prompt": "1+1", "answer": 2}])
    assert load_problems(f) == [{"id": "q1", "prompt": "12+34", "answer": "46"},
                                {"id": "7", "prompt": "1+1", "answer": "2"}]


def test_gsm8k_format(tmp_path):
    """GSM8K: the prompt is 'question' and the answer is what follows '####', commas removed ('1,234' -> '1234')."""
    f = write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "How many?", "answer": "He has 1,000 + 234.\n#### 1,234"},
        {"question": "And now?", "answer": "#### 5"}])
    probs = load_problems(f)
    assert [(p["prompt"], p["answer"]) for p in probs] == [("How many?", "1234"), ("And now?", "5")]
    assert probs[0]["id"] == "gsm.jsonl:1" and probs[1]["id"] == "gsm.jsonl:2"  # ids default to file:line


def test_math_format_nested_boxed(tmp_path):
    """MATH: the answer is the content of the last \\boxed{...}, nested braces kept whole."""
    f = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Half?", "solution": "First \\boxed{3}. So the answer is $\\boxed{\\frac{1}{2}}$."},
        {"problem": "Given?", "answer": "\\sqrt{2}"}])
    probs = load_problems(f)
    assert [(p["prompt"], p["answer"]) for p in probs] == [("Half?", "\\frac{1}{2}"), ("Given?", "\\sqrt{2}")]


def test_last_boxed_unit():
    """last_boxed returns the last balanced \\boxed{} content, or None when absent or unclosed."""
    assert last_boxed("\\boxed{a} and \\boxed{{b}{c}}") == "{b}{c}"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{\\frac{1}{2}") is None


def test_mixed_formats_and_blank_lines(tmp_path):
    """One file may mix the formats, and blank lines are skipped (line numbers still count them)."""
    f = write_jsonl(tmp_path / "mix.jsonl", [{"id": "a", "prompt": "p", "answer": "1"}, "",
                                             {"question": "q", "answer": "#### 2"}])
    probs = load_problems(f)
    assert [p["answer"] for p in probs] == ["1", "2"] and probs[1]["id"] == "mix.jsonl:3"


def test_load_offline(tmp_path):
    """Offline trajectories keep id, teacher, response and their line number; numeric ids become strings."""
    f = write_jsonl(tmp_path / "off.jsonl", [{"id": "q1", "teacher": "chain", "response": "1+1=2\n#### 2"},
                                             {"id": 3, "teacher": "pairs", "response": "#### 4"}])
    assert load_offline(f, known_ids={"q1", "3"}) == [
        {"id": "q1", "teacher": "chain", "response": "1+1=2\n#### 2", "line": 1},
        {"id": "3", "teacher": "pairs", "response": "#### 4", "line": 2}]


# -----------------------------------------------------------------------------
# malformed input: the error names file:line and the field

def error_of(fn, *args):
    with pytest.raises(DataError) as e:
        fn(*args)
    return str(e.value)


def test_missing_prompt_names_field(tmp_path):
    """An own-format line without 'answer', or with none of prompt/question/problem, names the field and line."""
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x", "answer": "1"}, {"id": "b", "prompt": "y"}])
    msg = error_of(load_problems, f)
    assert f"{f}:2:" in msg and "'answer'" in msg
    f = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "answer": "1"}])
    msg = error_of(load_problems, f)
    assert f"{f}:1:" in msg and "'prompt'" in msg


def test_bad_json_names_line(tmp_path):
    """A line that is not JSON (or not an object) fails with file:line."""
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x", "answer": "1"}, "", '{"id": "b", "prompt": '])
    msg = error_of(load_problems, f)
    assert f"{f}:3:" in msg and "JSON" in msg
    f = write_jsonl(tmp_path / "l.jsonl", ['["a list"]'])
    assert f"{f}:1:" in error_of(load_problems, f)


def test_empty_response_names_field(tmp_path):
    """An offline line with an empty or whitespace response names 'response' and its line."""
    f = write_jsonl(tmp_path / "off.jsonl", [{"id": "a", "teacher": "t", "response": "ok"},
                                             {"id": "a", "teacher": "t", "response": "  "}])
    msg = error_of(load_offline, f)
    assert f"{f}:2:" in msg and "'response'" in msg


def test_unknown_offline_id(tmp_path):
    """An offline trajectory for a problem not in the training file names 'id' and its line."""
    f = write_jsonl(tmp_path / "off.jsonl", [{"id": "a", "teacher": "t", "response": "r"},
                                             {"id": "zz", "teacher": "t", "response": "r"}])
    msg = error_of(load_offline, f, {"a"})
    assert f"{f}:2:" in msg and "'id'" in msg and "zz" in msg


def test_duplicate_problem_id(tmp_path):
    """A repeated problem id names the line, the field and the first occurrence."""
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x", "answer": "1"},
                                           {"id": "b", "prompt": "y", "answer": "2"},
                                           {"id": "a", "prompt": "z", "answer": "3"}])
    msg = error_of(load_problems, f)
    assert f"{f}:3:" in msg and "'id'" in msg and "line 1" in msg


def test_gsm8k_and_math_without_answer(tmp_path):
    """GSM8K with nothing after '####' and MATH with no \\boxed{} both fail with file:line and field."""
    f = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "work ####  "}])
    msg = error_of(load_problems, f)
    assert f"{f}:1:" in msg and "'answer'" in msg
    f = write_jsonl(tmp_path / "m.jsonl", [{"problem": "p", "solution": "no box here"}])
    msg = error_of(load_problems, f)
    assert f"{f}:1:" in msg and "'solution'" in msg


def test_wrong_type_and_missing_file(tmp_path):
    """A non-string prompt names the field; a missing file or an empty file is a DataError, not a crash."""
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": 5, "answer": "1"}])
    assert "'prompt'" in error_of(load_problems, f)
    assert "not found" in error_of(load_problems, str(tmp_path / "nope.jsonl"))
    assert "no problems" in error_of(load_problems, write_jsonl(tmp_path / "e.jsonl", [""]))
