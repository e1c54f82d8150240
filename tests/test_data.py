"""data/formats.py: the problem formats (own, GSM8K, MATH, multiple choice) and their benchmark tags, offline
trajectories, and errors that name file:line and field.

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
    """{"id", "prompt", "answer"} parses as-is, tagged "own"; a numeric answer becomes a string."""
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "q1", "prompt": "12+34", "answer": "46"},
                                           {"id": 7, "prompt": "1+1", "answer": 2}])
    assert load_problems(f) == [{"id": "q1", "prompt": "12+34", "answer": "46", "benchmark": "own"},
                                {"id": "7", "prompt": "1+1", "answer": "2", "benchmark": "own"}]


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


def test_mmlu_format(tmp_path):
    """MMLU: the prompt is the question, then one lettered option per line; the answer index (or letter) -> letter."""
    f = write_jsonl(tmp_path / "mmlu.jsonl", [
        {"question": "Which is a prime?", "choices": ["4", "6", "7", "9"], "answer": 2, "subject": "math"},
        {"id": "m2", "question": "Pick one.", "choices": ["yes", "no"], "answer": "B"}])
    assert load_problems(f) == [
        {"id": "mmlu.jsonl:1", "prompt": "Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9", "answer": "C", "benchmark": "mc"},
        {"id": "m2", "prompt": "Pick one.\nA. yes\nB. no", "answer": "B", "benchmark": "mc"}]


def test_arc_csqa_format(tmp_path):
    """ARC / CommonsenseQA: choices {"text", "label"} keep their own labels; the answer is answerKey."""
    f = write_jsonl(tmp_path / "arc.jsonl", [
        {"id": "Mercury_1", "question": "What melts ice?",
         "choices": {"text": ["heat", "cold"], "label": ["A", "B"]}, "answerKey": "A"},
        {"id": "csqa_1", "question": "Where is a bed?",
         "choices": {"label": ["1", "2", "3"], "text": ["sea", "bedroom", "sky"]}, "answerKey": "2"}])
    probs = load_problems(f)
    assert [(p["prompt"], p["answer"], p["benchmark"]) for p in probs] == [
        ("What melts ice?\nA. heat\nB. cold", "A", "mc"), ("Where is a bed?\n1. sea\n2. bedroom\n3. sky", "2", "mc")]


def test_benchmark_tags_and_override(tmp_path):
    """Each format is tagged (gsm8k, math, mc, own); a row's "benchmark" field overrides the tag."""
    f = write_jsonl(tmp_path / "mix.jsonl", [
        {"question": "q", "answer": "#### 1"}, {"problem": "p", "answer": "2"},
        {"problem": "p", "answer": "3", "benchmark": "math500"}, {"id": "o", "prompt": "p", "answer": "4"},
        {"question": "q", "choices": ["a", "b"], "answer": 0, "benchmark": "mmlu"}])
    assert [p["benchmark"] for p in load_problems(f)] == ["gsm8k", "math", "math500", "own", "mmlu"]


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


def test_native_rows_are_referenced_by_file_and_line(tmp_path):
    """A GSM8K/MATH row without "id" is "<file name>:<line>" (blank lines count), and a teacher file names it so."""
    f = write_jsonl(tmp_path / "gsm8k_train.jsonl", [{"question": "q1", "answer": "#### 1"}, "",
                                                     {"problem": "q2", "solution": "\\boxed{2}"}])
    ids = {p["id"] for p in load_problems(f)}
    assert ids == {"gsm8k_train.jsonl:1", "gsm8k_train.jsonl:3"}
    off = write_jsonl(tmp_path / "off.jsonl", [{"id": "gsm8k_train.jsonl:3", "teacher": "t", "response": "2"}])
    assert load_offline(off, known_ids=ids)[0]["id"] == "gsm8k_train.jsonl:3"
    off = write_jsonl(tmp_path / "off.jsonl", [{"id": "gsm8k_train.jsonl:2", "teacher": "t", "response": "2"}])
    assert "'gsm8k_train.jsonl:2' names no problem" in error_of(load_offline, off, ids)


def test_benchmark_default_tag(tmp_path):
    """load_problems(path, benchmark) tags rows without their own "benchmark" field; a row's field still wins."""
    f = write_jsonl(tmp_path / "m.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0},
                                           {"question": "q", "choices": ["a"], "answer": 0, "benchmark": "arc"}])
    assert [p["benchmark"] for p in load_problems(f, "mmlu")] == ["mmlu", "arc"]


def test_load_offline_teachers(tmp_path):
    """teachers="a,b" keeps those teachers' rows; a name with no trajectory in the file is an error naming it."""
    f = write_jsonl(tmp_path / "off.jsonl", [{"id": "q", "teacher": t, "response": "r"} for t in "abc"])
    assert [o["teacher"] for o in load_offline(f, teachers="a,c")] == ["a", "c"]
    msg = error_of(load_offline, f, None, None, "a,zz")
    assert f"{f}:" in msg and "teachers='a,zz'" in msg and "'zz'" in msg


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


def test_json_syntax_error_names_column_and_field(tmp_path):
    """A JSON syntax error keeps the decoder's column and names the field whose string is broken (a raw tab,
    a line cut by a raw newline, a bad escape); other syntax errors give the column alone."""
    row = '{"id": "a", "teacher": "t", "response": "step 1'  # 47 characters
    for line, complaint in [(row + '\tstep 2"}', "Invalid control character at column 48"),
                            (row, "Invalid control character at column 48"),  # the line's own newline
                            (row + '\\q"}', "Invalid \\escape at column 48")]:
        f = write_jsonl(tmp_path / "off.jsonl", [{"id": "a", "teacher": "t", "response": "ok"}, line])
        msg = error_of(load_offline, f)
        assert msg.startswith(f"{f}:2: not valid JSON: {complaint}, in the string of field 'response'"), msg
        assert ("write it as \\t or \\n" in msg) == ("control" in complaint)
    f = write_jsonl(tmp_path / "off.jsonl", ['{"id": "a" "teacher": "t"}'])
    assert error_of(load_offline, f) == f"{f}:1: not valid JSON: Expecting ',' delimiter at column 12"


def test_empty_response_names_field(tmp_path):
    """An offline line with an empty or whitespace response names 'response' and its line."""
    f = write_jsonl(tmp_path / "off.jsonl", [{"id": "a", "teacher": "t", "response": "ok"},
                                             {"id": "a", "teacher": "t", "response": "  "}])
    msg = error_of(load_offline, f)
    assert f"{f}:2:" in msg and "'response'" in msg


def test_offline_default_teacher(tmp_path):
    """Rows without "teacher" take the caller's name; a row's own field wins; with no default it is required."""
    f = write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "response": "r1"},
                                           {"id": "a", "teacher": "x", "response": "r2"}])
    assert [o["teacher"] for o in load_offline(f, teacher="t")] == ["t", "x"]
    msg = error_of(load_offline, f)
    assert f"{f}:1:" in msg and "'teacher'" in msg


def test_multiple_choice_errors(tmp_path):
    """A bad MC row names its line and field: answer out of range, answerKey not a label, mismatched lists."""
    arc = {"text": ["a"], "label": ["A"]}
    for row, field in [({"question": "q", "choices": ["a", "b"], "answer": 2}, "'answer'"),
                       ({"question": "q", "choices": ["a", "b"], "answer": True}, "'answer'"),
                       ({"question": "q", "choices": ["a", ""], "answer": 0}, "'choices'"),
                       ({"question": "q", "choices": [], "answer": 0}, "'choices'"),
                       ({"question": "q", "choices": arc, "answerKey": "B"}, "'answerKey'"),
                       ({"question": "q", "choices": dict(arc, label=["A", "B"]), "answerKey": "A"}, "'choices'"),
                       ({"question": "q", "choices": arc}, "'answerKey'"),
                       ({"choices": ["a"], "answer": 0}, "'question'")]:
        f = write_jsonl(tmp_path / "mc.jsonl", [{"question": "ok", "choices": ["x"], "answer": 0}, row])
        msg = error_of(load_problems, f)
        assert f"{f}:2:" in msg and field in msg, (row, msg)


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
