"""JSONL readers for problems and offline trajectories; a bad line stops the run before any compute.

problems (any mix of these, one object per line), each read as {"id", "prompt", "answer", "benchmark"}:
  {"id", "prompt", "answer"}                  own    the project's own format (the toy world uses it)
  {"question", "answer": "... #### N"}        gsm8k  GSM8K
  {"problem", "solution": "... \\boxed{..}"}   math   MATH / MATH-500 (or {"problem", "answer"})
  {"question", "choices": [..], "answer": 2}  mc     MMLU: choices lettered A, B, ...; the answer is the letter
  {"question", "choices": {"text": [..], "label": [..]}, "answerKey"}   mc   ARC / CommonsenseQA
A multiple-choice prompt is the question, then one "A. option" line per choice (ARC/CSQA keep their
own labels). A "benchmark" field in a row overrides the tag detected from the format. A row without
"id" (GSM8K and MATH have none) gets "<file base name>:<line>", the id a teacher file must use for it.
offline trajectories:
  {"id": <problem id>, "teacher": <name>, "response": <text>} ("teacher" may be left to the caller)
Errors name the file, the line number and the field at fault.
Tested by: python -m pytest -q tests/test_data.py
"""
import json
import os
import re

from verify import brace_group

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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
                raise _json_error(path, n, line, e) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def _json_error(path, n, line, e):
    """A DataError with the decoder's complaint and its column, naming the field whose string broke if one did."""
    msg = f"{path}:{n}: not valid JSON: {e.msg.removesuffix(' at')} at column {e.colno}"
    # does the line up to the error end inside the string value of a "key"? (a raw tab, a bad escape)
    m = re.search(r'"((?:[^"\\]|\\.)*)"\s*:\s*"(?:[^"\\]|\\.)*\\?$', line[:e.pos + 1])
    if m:
        msg += f", in the string of field '{m.group(1)}'"
    if "control character" in e.msg:
        msg += " (a raw tab or newline: write it as \\t or \\n)"
    return DataError(msg)


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
    group = brace_group(text, start + len("\\boxed")) if start >= 0 else None
    return group[0] if group else None


def multiple_choice(path, n, obj):
    """(prompt, answer letter) of an MMLU-style or ARC/CommonsenseQA-style row."""
    question, choices = _field(path, n, obj, "question"), obj["choices"]
    if isinstance(choices, dict):  # ARC / CommonsenseQA: {"text": [...], "label": [...]}, "answerKey"
        texts, labels = choices.get("text"), choices.get("label")
        if not (isinstance(texts, list) and isinstance(labels, list) and texts and len(texts) == len(labels)):
            raise DataError(f"{path}:{n}: field 'choices' must hold equal-length non-empty lists 'text' and "
                            f"'label', got {choices!r:.80}")
        labels = [str(l) for l in labels]
        answer = str(_field(path, n, obj, "answerKey", (str, int)))
        if answer not in labels:
            raise DataError(f"{path}:{n}: field 'answerKey' {answer!r} is not one of the labels {labels}")
    else:  # MMLU: a list of options, "answer" the index of the right one (or its letter)
        if not isinstance(choices, list) or not 0 < len(choices) <= len(LETTERS):
            raise DataError(f"{path}:{n}: field 'choices' must be a list of 1 to {len(LETTERS)} options "
                            f"or {{'text': [..], 'label': [..]}}, got {choices!r:.80}")
        texts, labels = choices, list(LETTERS[:len(choices)])
        answer = _field(path, n, obj, "answer", (int, str))
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(labels):
            answer = labels[answer]
        elif answer not in labels:
            raise DataError(f"{path}:{n}: field 'answer' must be an option index 0..{len(labels) - 1} "
                            f"or letter, got {answer!r:.60}")
    if not all(isinstance(t, (str, int, float)) and str(t).strip() for t in texts):
        raise DataError(f"{path}:{n}: field 'choices' has an empty or non-text option: {texts!r:.80}")
    return question + "\n" + "\n".join(f"{l}. {t}" for l, t in zip(labels, texts)), answer


def problem_of(path, n, obj, benchmark=None):
    """One problem {"id", "prompt", "answer", "benchmark"} from any supported format; `benchmark` tags a
    row without its own "benchmark" field (None: the format's tag)."""
    pid = str(obj.get("id", f"{os.path.basename(path)}:{n}"))
    if "prompt" in obj:
        prompt, bench = _field(path, n, obj, "prompt"), "own"
        ans = _field(path, n, obj, "answer", (str, int, float))
    elif "choices" in obj:
        (prompt, ans), bench = multiple_choice(path, n, obj), "mc"
    elif "question" in obj:  # GSM8K: the answer field is a worked solution ending in "#### N"
        sol = str(_field(path, n, obj, "answer", (str, int, float)))
        ans = sol.split("####")[-1].strip().replace(",", "") if "####" in sol else sol
        if not ans:
            raise DataError(f"{path}:{n}: field 'answer' has nothing after '####'")
        prompt, bench = _field(path, n, obj, "question"), "gsm8k"
    elif "problem" in obj:  # MATH / MATH-500
        if "answer" in obj:
            ans = _field(path, n, obj, "answer", (str, int, float))
        else:
            ans = last_boxed(_field(path, n, obj, "solution"))
            if not ans:
                raise DataError(f"{path}:{n}: field 'solution' has no \\boxed{{...}} answer")
        prompt, bench = _field(path, n, obj, "problem"), "math"
    else:
        raise DataError(f"{path}:{n}: unknown problem format: expected field 'prompt', 'question' or "
                        f"'problem', got fields {sorted(obj)}")
    if "benchmark" in obj:  # the row's own tag wins (e.g. "math500" vs "math", "arc" vs "mmlu")
        bench = _field(path, n, obj, "benchmark")
    elif benchmark:
        bench = benchmark
    return {"id": pid, "prompt": prompt, "answer": str(ans), "benchmark": bench}


def load_problems(path, benchmark=None):
    """All problems of a JSONL file; duplicate ids are an error. benchmark: as in problem_of."""
    out, seen = [], {}
    for n, obj in _rows(path):
        p = problem_of(path, n, obj, benchmark)
        if p["id"] in seen:
            raise DataError(f"{path}:{n}: field 'id' {p['id']!r} repeats line {seen[p['id']]}")
        seen[p["id"]] = n
        out.append(p)
    if not out:
        raise DataError(f"{path}: no problems")
    return out


def load_offline(path, known_ids=None, teacher=None, teachers=""):
    """All offline trajectories {"id", "teacher", "response", "line"} of a JSONL file; `teacher` names
    the rows that have no "teacher" field (without it, that field is required). teachers: comma-separated
    names to keep ("" = all); a name with no trajectory in the file is an error."""
    out = []
    for n, obj in _rows(path):
        pid = str(_field(path, n, obj, "id", (str, int)))
        if known_ids is not None and pid not in known_ids:
            raise DataError(f"{path}:{n}: field 'id' {pid!r} names no problem in the problems file")
        name = teacher if teacher is not None and "teacher" not in obj else _field(path, n, obj, "teacher")
        out.append({"id": pid, "teacher": name, "response": _field(path, n, obj, "response"), "line": n})
    if teachers:
        keep = teachers.split(",")
        unknown = sorted(set(keep) - {o["teacher"] for o in out})
        if unknown:
            raise DataError(f"{path}: teachers={teachers!r}: no trajectories from {unknown}")
        out = [o for o in out if o["teacher"] in keep]
    return out
