"""pytest's own lines in Chinese, for a run under `--lang zh` / LORA_KATA_LANG=zh.

The kata's report is written in the learner's language; around it pytest prints a header
("test session starts", "collected 254 items") and a closing line ("2 failed, 113 passed in
9.59s"). Under zh those few phrases are translated as they are written. Everything else
(paths, versions, the progress dots) passes through unchanged. These are pytest internals
(TerminalReporter's writers): if they moved, the lines stay English and nothing breaks.
"""

from __future__ import annotations

import re

WORDS = {
    "passed": "个通过",
    "failed": "个未通过",
    "skipped": "个跳过",
    "deselected": "个未选中",
    "selected": "个已选中",
    "error": "个错误",
    "errors": "个错误",
    "warning": "个警告",
    "warnings": "个警告",
    "xfailed": "个预期失败",
    "xpassed": "个意外通过",
    "rerun": "个重跑",
}
COUNTED = re.compile(r"(?<!\d)(\d+) (" + "|".join(sorted(WORDS, key=len, reverse=True)) + r")\b")
WHOLE = {
    "test session starts": "开始测试",
    "no tests ran": "没有运行任何测试",
    "warnings summary": "警告摘要",
    "short test summary info": "未通过测试摘要",
    "FAILURES": "失败详情",
    "ERRORS": "错误详情",
}


def translate(text: str) -> str:
    """One line of pytest's in Chinese (unknown text comes back unchanged)."""
    for english, chinese in WHOLE.items():
        text = re.sub(rf"(?<![\w-]){re.escape(english)}(?![\w-])", chinese, text)
    text = re.sub(r"\bcollect(?:ed|ing) (\d+) items?\b", r"收集到 \1 个测试", text)
    text = re.sub(r"\bcollecting \.\.\.", "正在收集……", text)
    text = COUNTED.sub(lambda m: f"{m.group(1)} {WORDS[m.group(2)]}", text)
    return re.sub(r" in (\d[\d.]*s(?: \([\d:]+\))?)", r"，用时 \1", text)


def speak_chinese(reporter) -> None:
    """Route the reporter's section titles and status lines through `translate`; the
    originals stay at `reporter.lora_kata_untranslated` for the kata's own report."""
    untranslated = {}
    for name in ("write_sep", "write_line", "rewrite"):
        original = getattr(reporter, name, None)
        if original is None:
            continue
        untranslated[name] = original

        def wrapped(first, *args, _original=original, _name=name, **kwargs):
            if _name == "write_sep":  # write_sep(sep, title=None, ...)
                if args and isinstance(args[0], str):
                    args = (translate(args[0]), *args[1:])
                elif isinstance(kwargs.get("title"), str):
                    kwargs["title"] = translate(kwargs["title"])
                return _original(first, *args, **kwargs)
            text = translate(first) if isinstance(first, str) else first
            return _original(text, *args, **kwargs)

        setattr(reporter, name, wrapped)
    reporter.lora_kata_untranslated = untranslated
