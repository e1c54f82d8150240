"""JSONL readers for problems and offline trajectories; a bad line stops the run before any compute.

problems (any mix of these, one object per line):
  {"id", "prompt", "answer"}                  the project's own format (the toy world uses it)
  {"question", "answer": "... #### N"}        GSM8K
  {"problem", "solution": "... \\boxed{..}"}   MATH / MATH-500 (or {"problem", "answer"})
offline trajectories:
  {"id": <problem id>, "teacher": <name>, "response": <text>}
Errors name the file, the line number and the field at fault.
Tested by: python -m pytest -q tests/test_data.py
"""
import json
import os


class DataError(ValueError):
    pass


def _rows(path):
    """(line number, object) for each non-blank line of a JSONL file."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def _field(path, n, obj, key, kinds=(str,)):
    if key not in obj:
        raise DataError(f"{path}:{n}: field '{key}' is missing")
    if not isinstance(obj[key], kinds) or (isinstance(obj[key], str) and not obj[key].strip()):
        raise DataError(f"{path}:{n}: field '{key}' must be a non-empty {kinds[0].__name__}, "
                        f"got {obj[key]!r:.60}")
    return obj[key]


def last_boxed(text):
    """Contents of the last \\boxed{...} in text (nested braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def problem_of(path, n, obj):
    """One problem {"id", "prompt", "answer"} from any supported format."""
    pid = str(obj.get("id", f"{os.path.basename(path)}:{n}"))
    if "prompt" in obj:
        return {"id": pid, "prompt": _field(path, n, obj, "prompt"),
                "answer": str(_field(path, n, obj, "answer", (str, int, float)))}
    if "question" in obj:  # GSM8K: the answer field is a worked solution ending in "#### N"
        sol = _field(path, n, obj, "answer", (str, int, float))
        ans = str(sol).split("####")[-1].strip().replace(",", "") if "####" in str(sol) else str(sol)
        if not ans:
            raise DataError(f"{path}:{n}: field 'answer' has nothing after '####'")
        return {"id": pid, "prompt": _field(path, n, obj, "question"), "answer": ans}
    if "problem" in obj:  # MATH / MATH-500
        if "answer" in obj:
            ans = str(_field(path, n, obj, "answer", (str, int, float)))
        else:
            ans = last_boxed(_field(path, n, obj, "solution"))
            if not ans:
                raise DataError(f"{path}:{n}: field 'solution' has no \\boxed{{...}} answer")
        return {"id": pid, "prompt": _field(path, n, obj, "problem"), "answer": ans}
    raise DataError(f"{path}:{n}: unknown problem format: expected field 'prompt', 'question' or "
                    f"'problem', got fields {sorted(obj)}")


def load_problems(path):
    """All problems of a JSONL file; duplicate ids are an error."""
    out, seen = [], {}
    for n, obj in _rows(path):
        p = problem_of(path, n, obj)
        if p["id"] in seen:
            raise DataError(f"{path}:{n}: field 'id' {p['id']!r} repeats line {seen[p['id']]}")
        seen[p["id"]] = n
        out.append(p)
    if not out:
        raise DataError(f"{path}: no problems")
    return out


def load_offline(path, known_ids=None):
    """All offline trajectories {"id", "teacher", "response", "line"} of a JSONL file."""
    out = []
    for n, obj in _rows(path):
        pid = str(_field(path, n, obj, "id", (str, int)))
        if known_ids is not None and pid not in known_ids:
            raise DataError(f"{path}:{n}: field 'id' {pid!r} names no problem in the training file")
        out.append({"id": pid, "teacher": _field(path, n, obj, "teacher"),
                    "response": _field(path, n, obj, "response"), "line": n})
    return out
