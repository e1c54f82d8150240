r"""The verifiable reward R_m (SPEC step 3): does a response's final answer equal the gold answer?

verify(response, gold) -> bool and extract_answer(response) -> str | None are pure functions;
`stats` counts calls, errors (exceptions turned into False) and timeouts of the symbolic check.
    python verify.py $'23*47 = 1081\n#### 1081' 1081     # prints the extracted answer and the verdict
    python -m pytest -q tests/test_verify.py tests/test_verify_graded.py
Cheapest first: the final answer is whichever of the last \boxed{}, '#### N' and 'the answer is'
comes last; a revision after it ('Wait, that's wrong; it's 14.') hands over to the value stated later,
and a retraction with none is no answer. With no marker, the final statement decides: the last clause
that states a value ('so the speed is 40 mph.', 'Therefore n = 4.') or picks an option letter, not the
last number anywhere (math-verify, lm-eval's flexible match); remarks after it are skipped, but a
hedged ('about 40', 'not 40'), questioned or retracted final, or a computation line with no words and
no period (a cut-off response: '920 + 161 = 1081'), is no answer. Both sides are normalised (units, $,
\dfrac, separators, markup); plain numbers compare exactly as Fractions in-process; lists, sets,
tuples and matrices item by item; intervals, one-variable inequalities and R less points as sets of
reals; two equations up to a constant factor; only what is left (radicals, pi, symbols) goes to sympy,
in a helper process killed after SYMPY_TIMEOUT seconds (signal.alarm only works on the main thread).
Exact means exact: 0.33 is not 1/3 and 15 is not 0.15. p% is p/100, and also p percentage points when
p >= 1 (GSM8K's golds for 'what percent?' are bare: '#### 25%' answers gold 25), never when p < 1
(0.5% is not 0.5: the percent sign would change the value).

Deliberately not handled (all rejected unless said otherwise):
  unmarked finals             number words 'twelve'; '= 12' alone on a line; text answers ('on Monday')
  prose after the answer      'The answer is 5 because ...' (but ', since ...' and '(a remark)' are cut)
  units                       single-letter plain units '5 m' (but '5\text{ m}' works); '4 h 30 min' vs 4.5
  approximation               gold '3.14' vs '\pi' (no tolerance either way)
  equivalent forms            'sin^2 x + cos^2 x' vs 1; unions not in simplest form; 'x + y > 3' vs '3 < x + y'
  notation                    subscripts 'a_1', '\log_2 8'; factorials '5!'
  accepted on purpose         '1,234' is 1234, never the list 1, 234; 'y = 3' matches gold 'x = 3', and
                              'x + y = 9' gold 9 (an answer's last side); '(2, 5)' matches '2 < x < 5'
                              (read as an interval); a bare '5' is a final statement
"""
import atexit
import functools
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction

SYMPY_TIMEOUT = 3.0  # seconds one symbolic check may take before its helper process is killed
MAX_LEN = 2000       # longer "answers" are garbage: compared as strings only

stats = {"calls": 0, "errors": 0, "timeouts": 0}
last_error = None  # repr of the latest exception turned into False, for debugging


def reset_stats() -> dict:
    """A copy of stats, then zero them (train.py logs this every step)."""
    out = dict(stats)
    for k in stats:
        stats[k] = 0
    return out


def verify(response: str, gold: str) -> bool:
    """True iff the final answer of response equals gold (a bare answer, or one inside \\boxed{})."""
    global last_error
    stats["calls"] += 1
    try:
        ans = extract_answer(response)
        return ans is not None and _equivalent(ans, _gold_answer(gold), response)
    except Exception as e:  # a bug or a hostile input must not end the run: count it, reward 0
        stats["errors"] += 1
        last_error = repr(e)
        return False

# -----------------------------------------------------------------------------
# extraction

_BOX = re.compile(r"\\(?:boxed|fbox)")
# 'the answer is', and 'Answer:' where a line or sentence starts or in bold (not 'To answer this:')
_PHRASE = re.compile(r"\banswers?\b\s*(?:\*\*\s*|__\s*)?(?:is|are)\b\s*:?|(?:^|(?<=\*\*)|(?<=[.!] ))[ \t#]*"
                     r"(?:\*\*|__)?(?:(?:the|my|final|correct|short)[ \t]+)*answers?(?:\s*\*\*|\s*__)?\s*:",
                     re.I | re.M)
# between two boxes on a line, these make the earlier one a sub-result: '$x = \boxed{3}$, so $y = \boxed{9}$'
_SO = re.compile(r"\b(?:so|thus|therefore|hence|then|finally|final|total|gives|giving)\b|"
                 r"\\(?:implies|Rightarrow)", re.I)
# after an answer, a revision cue hands over to the value stated later; a retraction with none rejects
_RETRACT = re.compile(r"\b(?:mistake|wrong|incorrect|error|oops|mis(?:read|calculat|count|took)|forgot|missed|overlook|"
                      r"typo|re-?check|re-?calculat|recomput|recount|reconsider|redo|scratch that|second thought)|"
                      r"\bno\b[,.!;:]|(?:\bnot|n't) (?:be )?(?:right|correct)", re.I)
_REVISE = re.compile(_RETRACT.pattern + r"|\b(?:wait|actually|correct(?:ion|ed)?|instead|rather|sorry|hold on|"
                     r"maybe|perhaps|possibly)\b", re.I)
# clause ends: sentence ends, new lines, ';', ', word' (not ', and'), 'word, $'; never inside $...$ or (...)
_END = re.compile(r"\$\$.{0,500}?\$\$|\\\[.{0,500}?\\\]|\\\(.{0,300}?\\\)|\$(?![\d\s])[^$\n]{0,300}\$|"
                  r"\([^()\n]{0,300}\)|[.!?](?=\s|$)|\n|;|,\s+(?!and\b|or\b)(?=[a-zA-Z]{2})|(?<=[a-z]{2}),\s+(?=\$)",
                  re.S)
# where a stated value starts: a number, $math$, a command, a bracket, 'x ='
_VALUE = re.compile(r"\$(?![\s.,;:!?]|$)|\\[a-zA-Z(\[]|[-+−]?\.?\d|[€£¥π√∞]|[(\[{]\s*[-+−.\d\\$]"
                    r"|(?<![a-zA-Z'])[a-zA-Z]\s*(?:=|<|>|≤|≥|\\[lgn]e(?![a-z]))")
# words before a value that make it no final answer: 'about 40', 'more than 40', 'not 40', 'if 40'
_HEDGE = re.compile(r"\b(?:not|than|about|approx\w*|around|roughly|nearly|almost|over|under|least|most|if|suppose|"
                    r"assum\w*|could|might|maybe|perhaps|probably|between|from|except)\b|n't\b", re.I)
_ASSIGN = re.compile(r"[\s$\\(\[]*[a-zA-Z]\s*=[^=]*")  # x = 3, $x=3$, \[ x = 3 \]
_IS = re.compile(r"\s(?:is|are|was|were|equals|be)\s")
# a value and the words after it: '$18 | every day at the market.', '7 | more boxes.', '15 percent | of them'
_TRAIL = re.compile(r"(.*(?:[\d$)\]}%]|\\[a-zA-Z]+)(?:\s*per\s?cent)?)(\s+(?!per\s?cent)[a-zA-Z][^\d$\\=<>(){}\[\]]*)",
                    re.S)


def brace_group(s, i):
    """(content, end) of the {group} opening at s[i]; None if it never closes."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1:j], j + 1
    return None


def _boxes(text):
    """[(start, end, content)] of the last box and the boxes just before it on its line; None if unclosed."""
    out = []
    for m in reversed(list(_BOX.finditer(text))):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if text.startswith("{", i):
            box = brace_group(text, i)
        else:  # \boxed 5
            tok = re.match(r"[^\s$]+", text[i:i + 100])
            box = (tok[0], i + tok.end()) if tok else None
        if box is None:
            return out[::-1] if out else None  # the last box is unclosed: truncated, no answer
        if out:
            gap = text[box[1]:out[-1][0]]  # negative when this box encloses the later one
            if box[1] > out[-1][0] or len(gap) > 40 or "\n" in gap:
                break
            if _SO.search(gap) and not re.search(r"\bor\b", gap):  # 'x = \boxed{3}, so y = \boxed{5}':
                break  # the earlier ones are sub-results
        out.append((m.start(), box[1], box[0]))
    return out[::-1]


def _drop_remarks(s):
    """s less remarks in parentheses, like '(not counting the tax)'; not '(2, 3)', nor an alternative '(or 6)'
    or a hedge '(at least)'."""
    def cut(m):
        words = [w.lower() for w in re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}", m[1])]
        hedges = _HEDGES - {"not"} | {"at", "more", "less"}  # '(not A or C)' is a remark, '(at least)' a hedge
        return "" if words and words[0] != "or" and set(words) - _MATHWORDS - hedges else m[0]
    return re.sub(r"\(([^()]*)\)", cut, s)


def _clauses(text):
    """text cut after each clause end (_END)."""
    out, start = [], 0
    for m in _END.finditer(text):
        if m[0][0] not in "$\\(":
            out.append(text[start:m.end()])
            start = m.end()
    return out + [text[start:]]


def _unmarked(text):
    """The final statement of a text without a marker: its last clause that states a value or picks an
    option letter ('so B'), from the value on. Clauses after it may only be remarks ('I hope it helps!').
    None if a retraction follows it ('Wait, that is wrong.'), if it is a question or hedged ('about 40',
    'more than 40'), or a bare computation without a period ('920 + 161 = 1081': a response cut off)."""
    for c in reversed(_clauses(_drop_remarks(text[-1000:]))):
        c = c.replace("**", "").strip()
        m, letter = _VALUE.search(c), _choice(_norm(c))
        if m is None and letter is None:  # a remark ('I hope it helps!') is skipped; not so a retraction
            named = re.search(r"\b[A-HJ]\b|\([A-Ja-j]\)", c) and not re.match(r"(?i:since|because|as)\b", c)
            if _RETRACT.search(c) or re.search(r"\w$", c) or named:  # ('That is wrong.'), a clause cut off
                return None  # ('Now we add the') or one naming an option it does not pick ('A would be too big.')
            continue
        if c.endswith("?") or _HEDGE.search(c if letter else c[:m.start()]):
            return None
        if letter:
            return c  # 'So the correct option is (B) 42.'
        if _VALUE.search(c.rsplit(": ", 1)[-1]):
            c = c.rsplit(": ", 1)[-1]  # 'Step 3: add them: 6 + 6 = 12.'
        m = _VALUE.search(c)
        words = re.search(r"[a-zA-Z]{2}", c[:m.start()])
        if re.search(r"=|\d\s*[-+*/×·^]\s*\d", c) and not (words or _ASSIGN.fullmatch(c) or c[-1] in ".!"):
            return None  # a bare computation: what a response cut off mid-work looks like ('920 + 161 = 1081')
        return _stated(c[m.start():])
    return None


def _stated(s):
    """The value a final statement states: after its last 'is' ('$x$ is $-3$', 'the 5th term is 80'), less the words
    after it ('$18 every day at the market.') unless they hedge or retract ('5 million', '3 times as many')."""
    if len(parts := _IS.split(s)) > 1 and _VALUE.search(parts[-1]):
        s = parts[-1]
    if t := _TRAIL.fullmatch(s):
        words = set(re.findall(r"[a-z]+", t[2].lower())) - {"to", "than"}
        if not (words & (_MATHWORDS | _HEDGES) or "n't" in t[2] or _RETRACT.search(t[2])):
            return t[1]
    return s


def extract_answer(response: str) -> str | None:
    """The final answer: the last \\boxed{} (several on one line join as 'a, b' unless 'so' comes between),
    '#### N' or '(final) answer is/:' -- whichever comes last; if a revision follows ('\\boxed{12}. Wait, it
    is 14.') or the answer is hedged ('The answer is not obvious. ...'), the value stated later if any.
    With none of these markers, the final statement of the response (_unmarked). None if there is no
    answer or the last box is unclosed."""
    cands = []  # (start, end, answer)
    boxes = _boxes(response)
    if boxes is None:
        return None
    if boxes:
        cands.append((boxes[-1][0], boxes[-1][1], ", ".join(c for *_, c in boxes)))
    i = response.rfind("####")
    if i >= 0:
        rest = response[i + 4:].lstrip()
        line = rest.split("\n", 1)[0]
        cands.append((i, len(response) - len(rest) + len(line), line))
    m = None
    for m in _PHRASE.finditer(response) if "nswer" in response or "NSWER" in response else ():
        pass
    if m:  # the rest of the line (or the next line) to the end of the clause, less a remark in parentheses
        rest = response[m.end():].lstrip()
        clause = _clauses(rest.split("\n", 1)[0][:MAX_LEN])[0]
        cands.append((m.start(), len(response) - len(rest) + len(clause), _drop_remarks(clause)))
    if not cands:
        ans = _unmarked(response)
    else:
        _, end, ans = max(cands)
        tail = _drop_remarks(response[end:])
        if _REVISE.search(tail) or _HEDGE.search(ans):  # the value stated later decides; if none can be read,
            unread = _RETRACT.search(tail) or _REVISE.search(tail) and _VALUE.search(tail)  # a retraction, or
            ans = _unmarked(response[end:]) or (None if unread else ans)  # a revision we cannot read, rejects
    ans = ans and ans.strip().strip("*").strip().rstrip(".,;").strip()
    return ans or None


def _gold_answer(gold):
    """The gold answer itself, also when it comes as '\\boxed{5}' or '... #### 5'."""
    g = str(gold).strip()
    if "\\boxed" in g or "\\fbox" in g or "####" in g:
        return extract_answer(g) or g
    return g

# -----------------------------------------------------------------------------
# normalisation

_UNICODE = str.maketrans({"−": "-", "–": "-", "π": "\\pi ", "∞": "\\infty ", "√": "\\sqrt", "×": "\\times ",
                          "·": "\\cdot ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "∪": "\\cup ", "°": "",
                          "∅": "\\emptyset ", "ℝ": "\\mathbb{R}", "∈": "\\in ", "∖": "\\setminus ", "±": "\\pm ",
                          "²": "^2", "³": "^3", "€": "", "£": "", "¥": "", "\u00a0": " ", "\u2009": " "})
_TEXT_CMDS = r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|boldsymbol|emph|mbox|operatorname)"
_MATHWORDS = {"sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "arcsin", "arccos", "arctan", "array",
              "infty", "infinity", "inf", "and", "or", "mod", "pmatrix", "bmatrix", "matrix", "smallmatrix", "pi", "to",
              "ln", "oo"}
_HEDGES = {"not", "least", "most", "about", "approximately", "roughly", "plus", "minus", "over", "than", "as",
           "million", "billion", "thousand", "hundred", "dozen", "half", "twice", "double", "too", "be", "will",
           "would", "but", "if", "unless", "maybe", "perhaps", "probably", "could", "might", "except", "squared",
           "cubed", "power"}
_ALIAS = {"\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\cfrac": "\\frac", "\\varnothing": "\\emptyset",
          "\\leq": "\\le", "\\leqslant": "\\le", "<=": "\\le", "\\geq": "\\ge", "\\geqslant": "\\ge", ">=": "\\ge",
          "\\neq": "\\ne", "!=": "\\ne", "\\langle": "(", "\\rangle": ")"}
_NORM = [(re.compile(p), r, tex) for p, r, tex in [  # tex: the pattern can only match where s holds a backslash
    (r"\\(?:[dtc]frac|varnothing|[lg]eq(?:slant)?|neq|[lr]angle)(?![a-zA-Z])", lambda m: _ALIAS[m[0]], True),
    (r"[<>!]=", lambda m: _ALIAS[m[0]], False), (r"\\\{\s*\\\}", r"\\emptyset", True),
    (r"\\(?:left|right|displaystyle|bigl|bigr|big|Big)(?![a-zA-Z])|(?<!\\)\\[!,;: ]|~|\\\$|\$|\\[()\[\]]", "", False),
    (r"\{,\}", ",", False), (r"\\begin\{array\}\{[^{}]*\}", r"\\begin{array}", True),
    (r"(?<=[)\]])\s*U\s*(?=[(\[])", r"\\cup ", False), (r"\^\s*\{?\s*\\circ\s*\}?|\\circ", "", True),
    (r"\\?%|\bper\s?cent\b|\bpercent\b", "%", False), (r"\\sqrt\s*\(", "sqrt(", True),
    # a \text{...} of plain words at the end, after a value, is a unit: 5\text{ cm}^2, 12\pi\text{ m}^2
    (r"(?<=[\w})])\s*" + _TEXT_CMDS + r"\s*\{\s*([a-zA-Z][a-zA-Z\s.]*)\}(?:\^\{?\d\}?)?$",
     lambda m: m[0] if set(m[1].lower().split()) & (_MATHWORDS | _HEDGES) else "", True),
    (_TEXT_CMDS + r"\s*\{([^{}]*)\}", r"\1", True), (_TEXT_CMDS + r"\s*\{([^{}]*)\}", r"\1", True),  # \textbf{\text{.}}
    (r"(?i)\ball real(?:s| numbers)\b", r"\\mathbb{R}", False),
]]
_UNIT = re.compile(r"(.*?(?:[\d})]|\\pi))\s*((?:[a-zA-Z]{2,}|[a-zA-Z]+/[a-zA-Z]+)\.?(?:\s+[a-zA-Z]+\.?){0,2})(?:\^\d)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?")


def _norm(s):
    """Canonical surface form: no $, markup, units or separators; spaces kept only between words; a
    percentage ends in a single '%' (15\\%, 15 percent)."""
    s = s.translate(_UNICODE)
    tex = "\\" in s
    for p, r, needs_tex in _NORM:
        if tex or not needs_tex:
            s = p.sub(r, s)
    s = s.strip().strip("*_").strip().rstrip(".").strip()
    m = _UNIT.fullmatch(s)  # 15 apples, 4 hours, 40 miles per hour -- but not 3 pi, 2 and 3, 5 or more
    if m and not set(m[2].lower().replace(".", "").split()) & (_MATHWORDS | _HEDGES):
        s = m[1]
    if _THOUSANDS.fullmatch(s.rstrip("%")):
        s = re.sub(r"[, ]", "", s)
    return re.sub(r" ?([^\w ]) ?", r"\1", re.sub(r"\s+", " ", s))


def _wordy(s):
    """True if s holds a word of 3+ letters that is not math (Monday, hours, undefined), or is 'no'."""
    return s.lower() == "no" or any(w.lower() not in _MATHWORDS for w in re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s))


def _text(s):
    """Case-, punctuation- and article-free form of a text answer."""
    return " ".join(w for w in re.sub(r"[^\w\s]", " ", s.lower()).split() if w not in ("a", "an", "the"))


_GOLD_CHOICE = re.compile(r"\(?([A-J])\)?|\(([a-j])\)")
_CUES = (r"so|thus|therefore|hence|the|correct|right|final|best|answer|option|choice|is|be|must|should|it|it's|i|"
         r"i'd|i'll|think|which|corresponds|to|pick|choose|select|go|with|my")
_CHOICE = re.compile(rf"(?i:(?:{_CUES})(?:[\s,:]+|(?=\()))*"  # cue words, then a letter that is no article
                     r"(?:\(([A-Ja-j])\)|([A-HJ])(?=[.,:)]|$|\s+(?:is|must be|seems) (?:the )?(?:correct|right|best|"
                     r"answer))|([a-hj])(?=[.:)]|$))"
                     r"[.:)]?(.*)", re.S)


def _choice(a):
    """The option letter an answer picks: (B), B), b, 'B. mitochondria', 'so B', 'which corresponds to
    option B', 'B is correct'; None if none, several or negated ('B is wrong')."""
    m = _CHOICE.fullmatch(a)
    if not m or re.search(r"\([A-Ja-j]\)|\b[A-HJ]\b|^\W*(?:is|was)\s+(?:not|wrong|incorrect|false)\b|n't", m[4]):
        return None
    return (m[1] or m[2] or m[3]).upper()

# -----------------------------------------------------------------------------
# equivalence

_PLAIN = re.compile(r"[+-]?\d+(?:\.\d+)?")
_N = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_RATIO = re.compile(rf"({_N})/({_N})|([+-]?)\\frac(?:\{{({_N})\}}\{{({_N})\}}|(\d)(\d))")
_MIXED = re.compile(r"(-?)(\d+)\s*(?:(\d+)/(\d+)|\\frac\{(\d+)\}\{(\d+)\})")
_SCI = re.compile(rf"(?:({_N})(?:[eE]|(?:\\times|\\cdot|\*|x)\s*10\^)|10\^)\{{?([+-]?\d+)\}}?")
_BASE = re.compile(r"([0-9A-Za-z]+)_\{?\(?(\d+)\)?\}?")
_REL = re.compile(r"(<|>|\\(?:le|ge|lt|gt|ne)(?![a-zA-Z]))")
_REPEAT = re.compile(r"([+-]?)(\d*)\.(\d*)\\(?:overline|bar|dot)\{?(\d+)\}?")
_LHS = re.compile(r"(?:[a-zA-Z](?:_\{?\w+\}?)?|\([a-zA-Z,]+\)|[a-zA-Z]\([a-zA-Z]\))(?:=|\\in(?![a-z]))(.+)", re.S)
_SETLIKE = re.compile(r"<|>|\\(?:le|ge|ne|mathbb|setminus)(?![a-z])")


def _number(s):
    """Exact value of an integer, decimal, fraction, mixed number, 1.2e5 / 1.2\\times10^{5} or repeating
    decimal 0.1\\overline{6}; else None."""
    if re.fullmatch(_N, s):
        return Fraction(s)
    if m := _RATIO.fullmatch(s):
        num, den = (m[1], m[2]) if m[1] else (m[4] or m[6], m[5] or m[7])
        sign = -1 if m[3] == "-" else 1
        return sign * Fraction(num) / Fraction(den) if Fraction(den) != 0 else None
    if (m := _MIXED.fullmatch(s)) and int(m[3] or m[5]) < int(m[4] or m[6]):  # 2 1/2, 2\frac{1}{2}
        v = int(m[2]) + Fraction(int(m[3] or m[5]), int(m[4] or m[6]))
        return -v if m[1] else v
    if (m := _SCI.fullmatch(s)) and abs(int(m[2])) <= 400:  # bound: 1e999999999 must not hang
        return Fraction(m[1] or 1) * Fraction(10) ** int(m[2])
    if m := _REPEAT.fullmatch(s):
        k = 10 ** len(m[3])
        v = int(m[2] or 0) + Fraction(int(m[3] or 0), k) + Fraction(int(m[4]), k * (10 ** len(m[4]) - 1))
        return -v if m[1] == "-" else v
    return None


def _equivalent(a, g, response=""):
    """Does answer a equal gold answer g (both extracted, not yet normalised)? response: a's context."""
    if a == g:
        return True
    if _PLAIN.fullmatch(a) and _PLAIN.fullmatch(g):  # the hot path: no regex soup, no sympy
        return Fraction(a) == Fraction(g)
    if len(a) > MAX_LEN or len(g) > MAX_LEN:
        return False
    a, g = _norm(a), _norm(g)
    pa, pg = a.endswith("%"), g.endswith("%")
    a, g = a.replace("%", ""), g.replace("%", "")
    if pa != pg and (v := _number((a if pa else g).rsplit("=", 1)[-1])) is not None:  # one side is p%: p/100,
        h, w = str(v / 100), _number(g if pa else a)  # or p percentage points where the gold says so or the
        value = w == v / 100 if w is not None else _same(h, g) if pa else _same(a, h)  # response reads it so
        return value or abs(v) >= 1 and _same(a, g)  # 25% answers 'what percent?' (gold 25); 0.5% never 0.5
    return _same(a, g)


def _same(a, g):
    """Does normalised answer a equal normalised gold g?"""
    if a == g:
        return True
    if c := _GOLD_CHOICE.fullmatch(g):
        return _choice(a) == (c[1] or c[2]).upper()
    if _wordy(a) or _wordy(g):
        return _text(a) == _text(g)
    return _struct_equal(a, g)


def _split(s, sep=","):
    """s split at sep outside any brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    return parts + [s[start:]]


def _structure(s):
    """(kind, items): 'list' (order-free), 'set', a bracket pair like '[)', 'matrix' or 'scalar' (items = s)."""
    if (m := _LHS.fullmatch(s)) and "=" not in m[1]:
        s = m[1]  # x = 3, (x,y) = (1,2), f(x) = 2x, x \in [1,2); but x = 5, y = 3 is a list
    if m := re.fullmatch(r"[(\[]?\\begin\{([pbB]?matrix|smallmatrix|array)\}(.*)\\end\{\1\}[)\]]?", s, re.S):
        return "matrix", [_split(row, "&") for row in m[2].split("\\\\") if row.strip()]
    if s.startswith("\\{") and s.endswith("\\}"):
        return "set", _split(s[2:-2])
    if s[:1] == "{" and (b := brace_group(s, 0)) and b[1] == len(s) and len(_split(b[0])) > 1:
        return "set", _split(b[0])  # {-2, 3}
    depth = [0]
    for c in s:
        depth.append(depth[-1] + (c in "([{") - (c in ")]}"))
    if len(s) > 2 and s[0] in "([" and s[-1] in ")]" and 0 not in depth[1:-1]:  # one bracket pair around all
        items = _split(s[1:-1])
        if len(items) > 1:
            return s[0] + s[-1], items
    parts = [q for p in _split(s) for q in re.split(r"(?<![a-zA-Z])(?:or|and)(?![a-zA-Z])", p) if q.strip()]
    if len(parts) == 1:
        parts = re.split(r"\\cup", s)
    if len(parts) == 1 and s.count("\\pm") == 1:
        x, y = s.split("\\pm")
        parts = [f"{x}+{y}", f"{x}-{y}"]
    parts = [p.strip() for p in parts]
    return ("list", parts) if len(parts) > 1 else ("scalar", s)


def _cells(kind, items):
    """(shape, flat items); a one-row or one-column matrix is a vector, like a tuple."""
    if kind != "matrix":
        return (kind, len(items)), items
    flat = [c for row in items for c in row]
    if len(items) == 1 or all(len(row) == 1 for row in items):
        return ("()", len(flat)), flat
    return ("matrix",) + tuple(len(row) for row in items), flat


def _matched(xs, ys, equal):
    """Can xs and ys be paired off one to one, in any order, by equal(x, y)?"""
    pool = list(xs)
    for y in ys:
        j = next((j for j, x in enumerate(pool) if equal(x, y)), None)
        if j is None:
            return False
        del pool[j]
    return not pool


def _struct_equal(a, g):
    """Equality of normalised answers: sets of reals as intervals, two equations as equations, lists and
    sets order-free, tuples/intervals/matrices item by item."""
    if _SETLIKE.search(a + g) and (ig := _intervals(g)) is not None:
        same = lambda x, y: x[0] + x[3] == y[0] + y[3] and _scalar_equal(x[1], y[1]) and _scalar_equal(x[2], y[2])
        return (ia := _intervals(a)) is not None and _matched(ia, ig, same)
    (ka, ia), (kg, ig) = _structure(a), _structure(g)
    if ka == kg == "scalar" and a.count("=") == g.count("=") == 1 and not (_LHS.fullmatch(a) and _LHS.fullmatch(g)):
        return _scalar_equal(a, g)  # y = 2x + 3 and 2x - y + 3 = 0: the same line, compared as equations
    names = {x.split("=")[0] for x in ia} if ka == "list" and all(_LHS.fullmatch(x) for x in ia) else ()
    if kg == "()" and len(names) == len(ia):  # x = 5, y = 3 against (5, 3), in the order of the names
        ka, ia = "()", [_LHS.fullmatch(x)[1] for x in sorted(ia)]
    if kg in ("list", "set"):
        ia = [ia] if ka == "scalar" else ia
        return ka in ("list", "set", "scalar") and _matched(ia, ig, _struct_equal)
    if "scalar" in (ka, kg):
        return ka == kg and _scalar_equal(ia, ig)
    (sa, ca), (sg, cg) = _cells(ka, ia), _cells(kg, ig)
    return sa == sg and all(_struct_equal(x, y) for x, y in zip(ca, cg))


def _relation(s):
    """(sides, ops) of an (in)equality chain, turned to read with < and \\le; None if s has none."""
    bits = _REL.split(s)
    if len(bits) == 1:
        return None
    sides, ops = [b.strip() for b in bits[0::2]], [{"\\lt": "<", "\\gt": ">"}.get(o, o) for o in bits[1::2]]
    if ops[0] in (">", "\\ge"):
        sides, ops = sides[::-1], [{">": "<", "\\ge": "\\le"}.get(o, o) for o in ops[::-1]]
    return sides, ops


def _intervals(s):
    """A set of reals as [(bracket, low, high, bracket)]: a union (\\cup, or) of intervals, inequalities in
    one variable and \\mathbb{R} less some numbers; None if s is not one."""
    out, inf = [], ("-\\infty", "\\infty")
    if m := re.fullmatch(r"\\\{[a-zA-Z](?:\\in\\mathbb ?\{?R\}?)?(?:\\mid|\||:)(.+)\\\}", s):
        s = m[1]  # set-builder: \{x \mid x \ne 2\}
    for part in re.split(r"\\cup|(?<![a-zA-Z])or(?![a-zA-Z])", s):
        part = part.strip()
        r = _relation(part)
        var = [i for i, x in enumerate(r[0]) if re.fullmatch(r"[a-zA-Z]", x)] if r else []
        m = re.fullmatch(r"(?:[a-zA-Z]\\in)?\\mathbb ?\{?R\}?(?:(?:\\setminus|-|\\backslash)\\\{(.+)\\\})?", part)
        if m or r and r[1] == ["\\ne"] and len(var) == 1:  # R less some numbers; x \ne 2
            pts = (_split(m[1]) if m[1] else []) if m else [r[0][1 - var[0]]]
            if any(_number(p) is None for p in pts):
                return None
            ends = [inf[0], *sorted(pts, key=_number), inf[1]]
            out += [("(", x, y, ")") for x, y in zip(ends, ends[1:])]
        elif r and set(r[1]) <= {"<", "\\le"} and len(var) == 1:  # x < 3, 3 \le x, 2 < x \le 5
            sides, ops = r
            if var == [0]:
                sides, ops = [inf[0], *sides], ["<", *ops]
            if var == [len(r[0]) - 1]:
                sides, ops = [*sides, inf[1]], [*ops, "<"]
            if len(sides) != 3:
                return None
            out.append(("(["[ops[0] != "<"], sides[0], sides[2], ")]"[ops[1] != "<"]))
        elif (k := _structure(part))[0] in ("()", "[]", "(]", "[)") and len(k[1]) == 2:
            out.append((k[0][0], k[1][0], k[1][1], k[0][1]))
        else:
            return None
    return out


def _scalar_equal(a, g):
    """Equality of two normalised single answers: exact numbers, bases, equations, then sympy."""
    if a == g:
        return True
    if "=" in a and "=" not in g:  # x + y = 9 against 9: the answer's value is its last side
        a = a.rsplit("=", 1)[1]
    x, y = _number(a), _number(g)
    if x is not None and y is not None:
        return x == y
    ba, bg = _BASE.fullmatch(a), _BASE.fullmatch(g)
    if ba or bg:  # 312_5 is not 312_6; a bare 312 may answer 312_5
        return bool(bg) and (ba[1] if ba else a).upper().lstrip("0") == bg[1].upper().lstrip("0") \
            and (not ba or ba[2] == bg[2])
    if "=" in g:  # equations: l1 - r1 = c (l2 - r2) for a constant c != 0
        if a.count("=") != 1 or g.count("=") != 1:
            return False
        da, dg = (_to_sympy("({})-({})".format(*s.split("="))) for s in (a, g))
        return bool(da and dg) and (_canon(da) == _canon(dg) or _sympy_equal(da, dg, "prop"))
    sa, sg = _to_sympy(a), _to_sympy(g)
    if sa is None or sg is None:
        return False
    if _canon(sa) == _canon(sg):  # 3*sqrt(5) and 3\sqrt{5}: no need to ask sympy
        return True
    if (x is not None and _has_symbols(sg)) or (y is not None and _has_symbols(sa)):
        return False  # a number never equals an expression in free variables: skip sympy
    return _sympy_equal(sa, sg)

# -----------------------------------------------------------------------------
# latex -> sympy syntax (in this process: plain string work), then sympy (in the helper process)

_FUNCS = {"sqrt", "pi", "oo", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "log", "exp",
          "I", "E"}
_RENAME = {"ln": "log", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "infty": "oo", "i": "I", "e": "E",
           "cdot": "*", "times": "*", "div": "/"}


def _arg(s, i):
    """(argument, next index) of a latex command at s[i]: a {group}, a \\command or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise ValueError("missing argument")
    if s[i] == "{":
        if (g := brace_group(s, i)) is None:
            raise ValueError("unclosed brace")
        return g
    m = re.match(r"\\[a-zA-Z]+", s[i:])
    return (m[0], i + m.end()) if m else (s[i], i + 1)


def _expand(s):
    """\\frac{a}{b} -> ((a)/(b)), \\sqrt{a} -> sqrt(a), \\sqrt[n]{a} -> ((a)**(1/(n))), recursively."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i):
            a, i = _arg(s, i + 5)
            b, i = _arg(s, i)
            out.append(f"(({_expand(a)})/({_expand(b)}))")
        elif s.startswith("\\sqrt", i):
            i, n = i + 5, None
            if s.startswith("[", i):
                j = s.index("]", i)
                n, i = s[i + 1:j], j + 1
            a, i = _arg(s, i)
            out.append(f"sqrt({_expand(a)})" if n is None else f"(({_expand(a)})**(1/({_expand(n)})))")
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _name(w):
    """A whitelisted sympy name, or single-letter symbols (xy -> x y: implicit product)."""
    w = _RENAME.get(w, w)
    return w if w in _FUNCS or not w.isalpha() else " ".join(_RENAME.get(c, c) for c in w)


def _command(m):
    """A latex command -> its sympy name (\\pi -> pi, \\cdot -> *); unknown ones poison the string."""
    w = _RENAME.get(m[1], m[1])
    return f" {w} " if w in _FUNCS or w in ("*", "/") else "\\BAD"


def _to_sympy(s):
    """Math in latex or plain text -> a parse_expr string of digits, + - * / ( ) and whitelisted names.

    None when s is not that (unknown command, subscript) or too big to evaluate safely
    (10^{10^{10}}, exponents >= 1000): sympy evaluates powers eagerly and would hang.
    """
    if len(s) > 300 or re.search(r"\d\s+\d|\d[eE][+-]?\d", s):  # '10 81' is no number; 1e999 no power
        return None
    try:
        s = _expand(s)
    except (ValueError, RecursionError):
        return None
    s = re.sub(r"\\([a-zA-Z]+)", _command, s)
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    s = re.sub(r"(\d+)\.(\d+)", lambda m: f"({int(m[1] + m[2])}/1{'0' * len(m[2])})", s)  # exact decimals
    s = re.sub(r"[a-zA-Z]+", lambda m: _name(m[0]), s)
    if s.count("(") != s.count(")") or re.search(r"\(\s*\)|[-+*/(]\s*$|^\s*[*/)]", s):  # no math: sympy would raise
        return None
    if not re.fullmatch(r"[0-9A-Za-z\s+\-*/()]+", s) or re.search(r"\*\*[\s(+-]*\d{4,}", s) \
            or re.search(r"\*\*\s*(?:\d+|\([\d\s+\-*/(]*)\*\*", s):
        return None
    return s


def _canon(s):
    """A _to_sympy string without spaces and implicit-looking '*' (3*sqrt(5) -> 3sqrt(5))."""
    return re.sub(r"\s+|(?<=[\d)])\*(?=[A-Za-z(])", "", s)


def _has_symbols(s):
    """True if a _to_sympy string has a free variable (a single letter other than I and E)."""
    return any(len(w) == 1 and w not in "IE" for w in re.findall(r"[A-Za-z]+", s))


_worker = None  # the sympy helper process, started on first need; one per process (and per DDP rank)
_worker_lock = threading.Lock()


def _stop_worker():
    """Kill the helper process and reap it (wait), so no zombie is left."""
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker.wait()
        _worker.stdin.close()
        _worker.stdout.close()
        _worker = None


def _forget_worker():
    """In a forked child: the parent's helper and lock are the parent's, start afresh."""
    global _worker, _worker_lock
    _worker, _worker_lock = None, threading.Lock()


atexit.register(_stop_worker)
os.register_at_fork(after_in_child=_forget_worker)


def _readline(p, timeout):
    """One line from the helper, or None if none came within timeout seconds."""
    fd, buf, end = p.stdout.fileno(), b"", time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError("sympy helper process died")
        buf += chunk
    return buf.decode()


@functools.lru_cache(maxsize=4096)  # groups repeat answers: ask sympy once
def _sympy_equal(a, b, op="eq"):
    """a == b (op 'eq') or a == c*b for a constant c != 0 (op 'prop'), a and b parse_expr strings, by sympy
    in the helper; False and stats['timeouts'] += 1 past the limit."""
    global _worker
    with _worker_lock:
        try:
            if _worker is not None and _worker.poll() is not None:
                _stop_worker()
            if _worker is None:
                _worker = subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__), "--worker"], bufsize=0,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                if _readline(_worker, 60) != "ready\n":  # importing sympy: seconds on a busy machine
                    raise RuntimeError("sympy helper process did not start")
            _worker.stdin.write(json.dumps([op, a, b]).encode() + b"\n")
            line = _readline(_worker, SYMPY_TIMEOUT)
        except BaseException:
            _stop_worker()
            raise
        if line is None:
            stats["timeouts"] += 1
            _stop_worker()  # it may be stuck in C code forever: kill, restart on the next call
            return False
    if line.startswith("E"):
        raise RuntimeError("sympy: " + line[2:].strip())
    return line == "1\n"


def _worker_main():
    """The helper process: read [op, a, b] JSON lines, answer 1 (equal), 0, or E <error>."""
    import random
    import resource
    import signal
    import sympy
    from sympy.parsing.sympy_parser import implicit_multiplication_application, parse_expr, standard_transformations
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then kills us
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]  # a runaway expression fails, rather than swaps
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30 if hard < 0 else min(4 << 30, hard), hard))
    names = {n: getattr(sympy, n) for n in (*_FUNCS, "Integer", "Float", "Rational", "Symbol")}
    T = standard_transformations + (implicit_multiplication_application,)
    rng = random.Random(0)
    r = lambda: sympy.Rational(rng.choice([-1, 1]) * rng.randint(1, 9), rng.randint(2, 11))
    point = lambda symbols: {v: r() + sympy.I * r() for v in symbols}  # complex: sqrt(x^2) != x

    def equal(op, a, b):
        x, y = (parse_expr(e, local_dict={}, global_dict=dict(names), transformations=T) for e in (a, b))
        if op == "prop":  # x = c y for a constant c != 0 iff x y(p) = y x(p), x(p) != 0 at a random point p
            p = point(x.free_symbols | y.free_symbols)
            xp, yp = sympy.simplify(x.subs(p)), sympy.simplify(y.subs(p))
            if xp == 0 or yp == 0:
                return False
            x, y = x * yp, y * xp
        d = x - y
        if d == 0 or sympy.simplify(d) == 0:
            return True
        if d.has(sympy.nan, sympy.zoo) or (not d.free_symbols and x.is_Rational != y.is_Rational):
            return False  # a decimal, however long, is not pi
        # identity test at random complex points, 30 digits
        pts = [point(d.free_symbols) for _ in range(3)]
        return all((v := abs(d.evalf(30, subs=p))).is_finite and v < 1e-20 for p in pts)

    print("ready", flush=True)
    for line in sys.stdin:  # EOF (the parent died) ends the loop and the process
        signal.alarm(60)  # a last guard should the parent be gone: the default action kills us
        try:
            out = "1" if equal(*json.loads(line)) else "0"
        except Exception as e:
            out = "E " + repr(e)[:300].replace("\n", " ")
        signal.alarm(0)
        print(out, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker_main()
    elif len(sys.argv) != 3:
        sys.exit("usage: python verify.py RESPONSE GOLD")
    else:
        ok = verify(sys.argv[1], sys.argv[2])
        print(f"extracted: {extract_answer(sys.argv[1])!r}\nverdict:   {ok}")
        if stats["errors"]:
            print(f"error:     {last_error}")
